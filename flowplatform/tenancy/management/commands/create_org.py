from django.core.management.base import BaseCommand, CommandParser

from flowplatform.commands import command_error
from flowplatform.exceptions import DomainError
from flowplatform.tenancy.services import create_organization


class Command(BaseCommand):
    help = "Create an organization (tenant)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="URL-safe identifier: lowercase letters, digits, hyphens.")
        parser.add_argument("--name", help="Display name (default: the slug).")

    def handle(self, *args: object, slug: str, name: str | None, **options: object) -> None:
        try:
            organization = create_organization(slug, name)
        except DomainError as exc:
            raise command_error(exc, {"slug": "SLUG"}) from None
        self.stdout.write(f"created organization {organization.slug} ({organization.id})")
