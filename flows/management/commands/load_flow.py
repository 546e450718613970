from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from flowplatform import rls
from flowplatform.commands import command_error
from flowplatform.exceptions import DomainError, InvalidInput, NotFound
from flowplatform.tenancy.models import Organization
from flowplatform.tenancy.services import get_organization, valid_actor
from flows.definitions import parse_definition
from flows.models import Flow
from flows.services import create_flow, update_flow


def read_definition(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CommandError(f"no such file: {path}") from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path} is not UTF-8 text: {exc}") from None


def name_in(definition: str) -> str | None:
    """The definition's own `name:`, if it has one; an unparsable file is reported later, by
    the same validation the API runs."""
    try:
        name = parse_definition(definition).get("name")
    except InvalidInput:
        return None
    return name if isinstance(name, str) and name else None


def problems(exc: InvalidInput) -> str:
    """One line per problem: where (without the HTTP location), what, and its type."""
    return "\n".join(
        f"  {'.'.join(map(str, loc[1:] if loc[:1] == ('body',) else loc))}: {msg} ({type_})"
        for loc, msg, type_ in exc.errors
    )


class Command(BaseCommand):
    help = (
        "Load a flow definition from a YAML file into an organization: create the flow, or add "
        "a version when a flow with that name exists and the definition changed (an identical "
        "definition changes nothing). Validated as POST/PUT /flows validates; every problem is "
        "printed on its own line and the command exits 1, writing nothing. Prints the flow's "
        "id and version."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, metavar="PATH.yaml", help="the definition file")
        parser.add_argument("--org", required=True, metavar="SLUG", help="the organization's slug")
        parser.add_argument(
            "--name",
            help="the flow's name (default: the definition's `name:`, else the file name "
            "without its extension)",
        )
        parser.add_argument(
            "--actor", default="system", help="recorded as modified_by (default: system)"
        )

    def handle(self, *args: object, **options: Any) -> None:
        path: Path = options["path"]
        try:
            valid_actor(options["actor"], "actor")
        except InvalidInput as exc:
            raise command_error(exc) from None
        definition = read_definition(path)
        try:
            organization = get_organization(options["org"])
        except NotFound as exc:
            raise CommandError(exc.message) from None
        with rls.tenant_scope(organization):
            message = self.load(organization, path, definition, options)
        self.stdout.write(message)

    def load(
        self, organization: Organization, path: Path, definition: str, options: dict[str, Any]
    ) -> str:
        """Create the flow or add a version; the line to print."""
        name = options["name"] or name_in(definition) or path.stem
        flow = (
            Flow.objects.select_related("current_version")
            .filter(organization=organization, name=name, deleted_at__isnull=True)
            .first()
        )
        if flow is not None and flow.current_version.definition == definition:
            # update_flow would add no version but still touch the flow; loading an unchanged
            # file (say on every deploy) writes nothing at all.
            return f"unchanged: flow '{name}' {flow.pk} version {flow.current_version.version}"
        try:
            if flow is None:
                flow = create_flow(
                    organization, name=name, definition=definition, actor=options["actor"]
                )
                action = "created"
            else:
                flow = update_flow(flow, definition=definition, actor=options["actor"])
                action = "new version of"
        except InvalidInput as exc:
            raise CommandError(f"cannot load {path}:\n{problems(exc)}") from None
        except DomainError as exc:
            raise CommandError(exc.message) from None
        return f"{action}: flow '{name}' {flow.pk} version {flow.current_version.version}"
