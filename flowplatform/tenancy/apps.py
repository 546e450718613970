from django.apps import AppConfig
from django.db.models.signals import post_migrate, pre_migrate


class TenancyConfig(AppConfig):
    name = "flowplatform.tenancy"
    label = "tenancy"
    verbose_name = "Tenancy"

    def ready(self) -> None:
        from django.core.checks import Tags, register

        from flowplatform import lookups  # noqa: F401  (registers the `__any_of` lookup)
        from flowplatform.rls import bypass_for_migrations, check_database_role, grant_to_app_role

        register(check_database_role, Tags.database, deploy=True)

        pre_migrate.connect(bypass_for_migrations, sender=self)
        post_migrate.connect(grant_to_app_role, sender=self)
