import uuid

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from flowplatform import rls
from flowplatform.commands import command_error
from flowplatform.exceptions import DomainError, NotFound
from flowplatform.tenancy.models import ApiKey
from flowplatform.tenancy.services import create_api_key, create_organization, get_organization


class Command(BaseCommand):
    help = (
        "Issue an API key for an organization. The key is printed alone on the last line of "
        "stdout and is never shown again (only its hash is stored)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, metavar="SLUG", help="The organization's slug.")
        parser.add_argument(
            "--create-org", action="store_true", help="Create the organization if it is missing."
        )
        parser.add_argument("--name", default="", help="A label for the key.")
        parser.add_argument(
            "--kind", choices=ApiKey.Kind.values, default=ApiKey.Kind.SERVICE, help="Key kind."
        )
        parser.add_argument("--user-id", type=uuid.UUID, help="For --kind user: the user's UUID.")
        parser.add_argument(
            "--scope",
            action="append",
            metavar="read|write",
            help="What the key may do: read (GET), write (POST, PUT, PATCH, DELETE). Repeat it "
            "or comma-separate values (--scope read,write); default: both.",
        )

    @transaction.atomic
    def handle(self, *args: object, **options: object) -> None:
        slug = options["org"]
        created = False
        try:
            try:
                organization = get_organization(slug)
            except NotFound:
                if not options["create_org"]:
                    raise CommandError(
                        f"organization '{slug}' does not exist (pass --create-org to create it)"
                    ) from None
                organization = create_organization(slug)
                created = True
            with rls.tenant_scope(organization):
                issued = create_api_key(
                    organization,
                    name=options["name"],
                    kind=options["kind"],
                    user_id=options["user_id"],
                    scopes=scopes_option(options["scope"]),
                )
        except DomainError as exc:  # the transaction is rolled back: nothing was created
            raise command_error(exc, {"slug": "--org", "scopes": "--scope"}) from None
        if created:
            self.stdout.write(f"created organization {organization.slug}")
        self.stdout.write(
            f"API key {issued.api_key.prefix} for {organization.slug}, scopes "
            f"{','.join(issued.api_key.scopes)} (store it now; it is not shown again):"
        )
        self.stdout.write(issued.secret)


def scopes_option(values: list[str] | None) -> list[str] | None:
    """--scope read --scope write, or --scope read,write; None (all scopes) when absent."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
