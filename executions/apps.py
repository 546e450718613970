from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "executions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from executions import executors
        from flowplatform import tasktypes

        tasktypes.register(executors.executors)  # flows validates task types through it
