from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "flowplatform.webhooks"
    label = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Wiring: each event's `data` is the resource as the API shows it, rendered by the API's
        # own serializers (an edge), which the engine that emits the event may not import.
        from flowplatform.webhooks import events, renderers

        events.register_renderers(renderers.RENDERERS)
