from django.core.management.base import BaseCommand

from flowplatform import rls
from flowplatform.tenancy.services import purge_expired_keys


class Command(BaseCommand):
    help = (
        "Delete expired Idempotency-Key records (older than IDEMPOTENCY_TTL_HOURS). Expired keys "
        "are never replayed, so this only reclaims space; run it from cron, e.g. daily."
    )

    def handle(self, *args: object, **options: object) -> None:
        # Every organization's keys: maintenance, through the audited bypass.
        with rls.bypass("manage.py purge_idempotency_keys", "deleting expired keys"):
            deleted = purge_expired_keys()
        self.stdout.write(f"deleted {deleted} expired idempotency key(s)")
