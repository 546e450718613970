from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "flowplatform.tenancy"
    label = "tenancy"
    verbose_name = "Tenancy"

    def ready(self) -> None:
        # Registers the OpenAPI description of the Bearer key scheme.
        from flowplatform.api import schema  # noqa: F401
