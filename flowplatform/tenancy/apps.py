from django.apps import AppConfig
from django.db.models.signals import post_migrate, pre_migrate


class TenancyConfig(AppConfig):
    name = "flowplatform.tenancy"
    label = "tenancy"
    verbose_name = "Tenancy"

    def ready(self) -> None:
        # Registers the OpenAPI description of the Bearer key scheme.
        from flowplatform.api import schema  # noqa: F401
        from flowplatform.rls import bypass_for_migrations, grant_to_app_role

        pre_migrate.connect(bypass_for_migrations, sender=self)
        post_migrate.connect(grant_to_app_role, sender=self)
