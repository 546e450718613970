"""/flows: create, read, change and soft-delete flows; every changed definition is a new version."""

from __future__ import annotations

from typing import Any

import pytest

from flows.models import Flow, FlowVersion
from tests.helpers.tenants import DEFINITION, Tenant

SECOND_DEFINITION = """\
name: document-review
tasks:
  - name: extract
    type: transform
  - name: review
    type: human
    depends_on: [extract]
  - name: publish
    type: transform
    depends_on: [review]
"""

THIRD_DEFINITION = """\
name: document-review
tasks:
  - name: extract
    type: transform
"""


def create(tenant: Tenant, **body: Any):  # type: ignore[no-untyped-def]
    return tenant.client.post("/flows", {"definition": DEFINITION, **body}, format="json")


def versions(tenant: Tenant, flow_id: str) -> list[dict[str, Any]]:
    response = tenant.client.get(f"/flows/{flow_id}/versions")
    assert response.status_code == 200, response.content
    return response.json()["results"]


def assert_body_error(response, field: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.content
    assert response.json()["error"]["code"] == "validation_error"
    assert ["body", field] in [item["loc"] for item in response.json()["detail"]]


# --- create -----------------------------------------------------------------------------------


def test_create_flow_stores_the_definition_as_version_1(tenant: Tenant) -> None:
    response = create(tenant, name="review", description="Reviews documents")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "review"
    assert body["description"] == "Reviews documents"
    assert body["definition"] == DEFINITION
    assert body["version"] == 1
    assert body["organization_id"] == str(tenant.org.id)
    assert body["modified_by"] == tenant.actor
    assert body["deleted_at"] is None
    flow = Flow.objects.get(pk=body["id"])
    assert flow.organization_id == tenant.org.id
    stored = FlowVersion.objects.get(flow=flow)
    assert stored.version == 1
    assert stored.definition == DEFINITION
    assert stored.parsed["tasks"][1] == {
        "name": "review",
        "type": "human",
        "depends_on": ["extract"],
    }


def test_create_flow_without_description_is_allowed(tenant: Tenant) -> None:
    response = create(tenant, name="review")

    assert response.status_code == 201
    assert response.json()["description"] == ""


def test_created_flow_reads_back_the_same(tenant: Tenant) -> None:
    created = create(tenant, name="review").json()

    response = tenant.client.get(f"/flows/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created


def test_definition_text_is_kept_exactly_as_sent(tenant: Tenant) -> None:
    text = "# leading comment\n\nname: x   \ntasks:\n  - {name: a, type: transform}\n\n\n"

    response = create(tenant, name="spacing", definition=text)

    assert response.status_code == 201, response.content
    assert response.json()["definition"] == text
    assert versions(tenant, response.json()["id"])[0]["definition"] == text


@pytest.mark.parametrize(
    "definition",
    [
        pytest.param("name: [unclosed", id="unclosed-list"),
        pytest.param("tasks:\n  - name: a\n bad-indent: 1", id="bad-indentation"),
        pytest.param("{a: 1", id="unclosed-mapping"),
        pytest.param('"unterminated', id="unterminated-string"),
        pytest.param("a: 1\n\tb: 2", id="tab-indentation"),
    ],
)
def test_definition_that_is_not_yaml_is_422_on_definition(tenant: Tenant, definition: str) -> None:
    response = create(tenant, name="broken", definition=definition)

    assert_body_error(response, "definition")
    assert not Flow.objects.filter(organization=tenant.org).exists()
    assert not FlowVersion.objects.exists()


@pytest.mark.parametrize(
    "definition",
    [
        pytest.param("just some text", id="string"),
        pytest.param("42", id="number"),
        pytest.param("- extract\n- review\n", id="list"),
        pytest.param("", id="empty"),
        pytest.param("~", id="null"),
        pytest.param("# only a comment\n", id="comment-only"),
    ],
)
def test_definition_that_is_not_a_mapping_is_422_on_definition(
    tenant: Tenant, definition: str
) -> None:
    response = create(tenant, name="scalar", definition=definition)

    assert_body_error(response, "definition")
    assert not Flow.objects.filter(organization=tenant.org).exists()


@pytest.mark.parametrize(
    "definition",
    [
        pytest.param("base: &x {type: transform}\ntasks:\n  - *x\n", id="alias-in-list"),
        pytest.param("a: &anchor 1\nb: *anchor\n", id="scalar-alias"),
        pytest.param(
            "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\n", id="billion-laughs"
        ),
        pytest.param("base: &b {type: human}\ntask:\n  <<: *b\n  name: r\n", id="merge-key"),
    ],
)
def test_definition_using_aliases_is_422_on_definition(tenant: Tenant, definition: str) -> None:
    response = create(tenant, name="aliased", definition=definition)

    assert_body_error(response, "definition")
    assert not Flow.objects.filter(organization=tenant.org).exists()


def test_definition_with_an_anchor_but_no_alias_is_accepted(tenant: Tenant) -> None:
    response = create(
        tenant, name="anchored", definition="name: &n x\ntasks: [{name: a, type: transform}]\n"
    )

    assert response.status_code == 201, response.content


def test_definition_that_is_not_a_string_is_422(tenant: Tenant) -> None:
    response = create(tenant, name="object", definition={"name": "x", "tasks": []})

    assert_body_error(response, "definition")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"definition": DEFINITION}, "name"),
        ({"name": "no-definition"}, "definition"),
        ({"name": "", "definition": DEFINITION}, "name"),
        ({"name": "x" * 201, "definition": DEFINITION}, "name"),
        ({"name": "typo", "definition": DEFINITION, "descripton": "x"}, "descripton"),
    ],
)
def test_invalid_create_body_is_422_naming_the_field(
    tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    response = tenant.client.post("/flows", body, format="json")

    assert_body_error(response, field)
    assert not Flow.objects.exists()


def test_duplicate_name_in_one_organization_is_409(tenant: Tenant) -> None:
    assert create(tenant, name="review").status_code == 201

    response = create(tenant, name="review", definition=SECOND_DEFINITION)

    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "conflict"
    assert Flow.objects.filter(organization=tenant.org).count() == 1
    assert FlowVersion.objects.count() == 1


def test_same_name_in_another_organization_is_allowed(tenant: Tenant, other_tenant: Tenant) -> None:
    assert create(tenant, name="review").status_code == 201

    assert create(other_tenant, name="review").status_code == 201


def test_flow_names_are_case_sensitive(tenant: Tenant) -> None:
    assert create(tenant, name="review").status_code == 201

    assert create(tenant, name="Review").status_code == 201


# --- versioning -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["put", "patch"])
def test_changed_definition_adds_the_next_version(tenant: Tenant, method: str) -> None:
    flow_id = create(tenant, name="review").json()["id"]

    response = getattr(tenant.client, method)(
        f"/flows/{flow_id}", {"name": "review", "definition": SECOND_DEFINITION}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["version"] == 2
    assert response.json()["definition"] == SECOND_DEFINITION
    listed = versions(tenant, flow_id)
    assert [v["version"] for v in listed] == [1, 2]
    assert [v["definition"] for v in listed] == [DEFINITION, SECOND_DEFINITION]
    assert {v["flow_id"] for v in listed} == {flow_id}
    assert {v["organization_id"] for v in listed} == {str(tenant.org.id)}
    assert listed[1]["created_by"] == tenant.actor


def test_each_change_adds_one_version_and_earlier_versions_never_change(tenant: Tenant) -> None:
    flow_id = create(tenant, name="review").json()["id"]
    first = FlowVersion.objects.filter(flow_id=flow_id).values().get()

    for definition in (SECOND_DEFINITION, THIRD_DEFINITION, DEFINITION):
        response = tenant.client.patch(
            f"/flows/{flow_id}", {"definition": definition}, format="json"
        )
        assert response.status_code == 200, response.content

    listed = versions(tenant, flow_id)
    assert [v["version"] for v in listed] == [1, 2, 3, 4]
    assert [v["definition"] for v in listed] == [
        DEFINITION,
        SECOND_DEFINITION,
        THIRD_DEFINITION,
        DEFINITION,
    ]
    assert FlowVersion.objects.filter(pk=first["id"]).values().get() == first
    assert tenant.client.get(f"/flows/{flow_id}").json()["version"] == 4


@pytest.mark.parametrize(
    "body",
    [
        {"name": "review", "definition": DEFINITION},
        {"name": "renamed", "description": "new words", "definition": DEFINITION},
    ],
)
def test_put_with_the_same_definition_adds_no_version(tenant: Tenant, body: dict[str, Any]) -> None:
    flow_id = create(tenant, name="review").json()["id"]

    response = tenant.client.put(f"/flows/{flow_id}", body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["version"] == 1
    assert response.json()["name"] == body["name"]
    assert FlowVersion.objects.filter(flow_id=flow_id).count() == 1


@pytest.mark.parametrize("body", [{"name": "renamed"}, {"description": "new words"}, {}])
def test_patch_without_definition_keeps_the_version(tenant: Tenant, body: dict[str, Any]) -> None:
    flow_id = create(tenant, name="review").json()["id"]

    response = tenant.client.patch(f"/flows/{flow_id}", body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["version"] == 1
    assert response.json()["definition"] == DEFINITION
    for key, value in body.items():
        assert response.json()[key] == value
    assert FlowVersion.objects.filter(flow_id=flow_id).count() == 1


def test_put_without_definition_is_422(tenant: Tenant) -> None:
    flow_id = create(tenant, name="review").json()["id"]

    response = tenant.client.put(f"/flows/{flow_id}", {"name": "renamed"}, format="json")

    assert_body_error(response, "definition")
    assert Flow.objects.get(pk=flow_id).name == "review"


@pytest.mark.parametrize(
    "definition", ["name: [unclosed", "just text", "- a\n- b\n", "a: &x 1\nb: *x\n"]
)
@pytest.mark.parametrize("method", ["put", "patch"])
def test_invalid_definition_on_update_is_422_and_adds_no_version(
    tenant: Tenant, method: str, definition: str
) -> None:
    flow_id = create(tenant, name="review").json()["id"]
    before = Flow.objects.filter(pk=flow_id).values().get()

    response = getattr(tenant.client, method)(
        f"/flows/{flow_id}", {"name": "renamed", "definition": definition}, format="json"
    )

    assert_body_error(response, "definition")
    assert FlowVersion.objects.filter(flow_id=flow_id).count() == 1
    assert Flow.objects.filter(pk=flow_id).values().get() == before


@pytest.mark.parametrize("method", ["put", "patch"])
def test_renaming_to_a_taken_name_is_409(tenant: Tenant, method: str) -> None:
    create(tenant, name="taken")
    flow_id = create(tenant, name="review").json()["id"]

    response = getattr(tenant.client, method)(
        f"/flows/{flow_id}", {"name": "taken", "definition": DEFINITION}, format="json"
    )

    assert response.status_code == 409, response.content
    assert Flow.objects.get(pk=flow_id).name == "review"


def test_versions_cannot_be_written(tenant: Tenant) -> None:
    flow_id = create(tenant, name="review").json()["id"]

    for method in ("post", "put", "patch", "delete"):
        response = getattr(tenant.client, method)(
            f"/flows/{flow_id}/versions", {"definition": SECOND_DEFINITION}, format="json"
        )
        assert response.status_code == 405, (method, response.content)

    assert FlowVersion.objects.filter(flow_id=flow_id).count() == 1


def test_versions_of_a_missing_flow_is_404(tenant: Tenant) -> None:
    response = tenant.client.get("/flows/00000000-0000-0000-0000-000000000000/versions")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_execution_keeps_the_version_it_was_created_with(tenant: Tenant) -> None:
    flow_id = create(tenant, name="review").json()["id"]
    execution = tenant.flow_execution(Flow.objects.get(pk=flow_id))

    changed = tenant.client.patch(
        f"/flows/{flow_id}", {"definition": SECOND_DEFINITION}, format="json"
    )

    assert changed.status_code == 200, changed.content
    response = tenant.client.get(f"/flow-executions/{execution.pk}")
    assert response.json()["flow_version"] == 1


# --- delete -----------------------------------------------------------------------------------


def test_delete_is_soft_and_hides_the_flow_from_lists(tenant: Tenant) -> None:
    flow_id = create(tenant, name="review").json()["id"]

    response = tenant.client.delete(f"/flows/{flow_id}")

    assert response.status_code == 204
    assert response.content == b""
    flow = Flow.objects.get(pk=flow_id)
    assert flow.deleted_at is not None
    assert flow.modified_by == tenant.actor
    assert FlowVersion.objects.filter(flow_id=flow_id).count() == 1
    assert tenant.client.get("/flows").json()["count"] == 0
    listed = tenant.client.get("/flows", {"include_deleted": "true"}).json()["results"]
    assert [row["id"] for row in listed] == [flow_id]
    assert listed[0]["deleted_at"] is not None


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("put", {"name": "review", "definition": SECOND_DEFINITION}),
        ("put", {"name": "review", "definition": DEFINITION}),
        ("patch", {"description": "revived?"}),
        ("patch", {"definition": SECOND_DEFINITION}),
    ],
)
def test_changing_a_deleted_flow_is_409_and_changes_nothing(
    tenant: Tenant, method: str, body: dict[str, Any]
) -> None:
    flow_id = create(tenant, name="review").json()["id"]
    tenant.client.delete(f"/flows/{flow_id}")
    before = Flow.objects.filter(pk=flow_id).values().get()

    response = getattr(tenant.client, method)(f"/flows/{flow_id}", body, format="json")

    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "conflict"
    assert Flow.objects.filter(pk=flow_id).values().get() == before
    assert FlowVersion.objects.filter(flow_id=flow_id).count() == 1


def test_deleting_twice_keeps_the_first_deletion_time(tenant: Tenant) -> None:
    flow_id = create(tenant, name="review").json()["id"]
    tenant.client.delete(f"/flows/{flow_id}")
    deleted_at = Flow.objects.get(pk=flow_id).deleted_at

    assert tenant.client.delete(f"/flows/{flow_id}").status_code == 204

    assert Flow.objects.get(pk=flow_id).deleted_at == deleted_at


def test_deleted_flows_versions_stay_readable(tenant: Tenant) -> None:
    flow_id = create(tenant, name="review").json()["id"]
    changed = tenant.client.patch(
        f"/flows/{flow_id}", {"definition": SECOND_DEFINITION}, format="json"
    )
    assert changed.status_code == 200, changed.content

    assert tenant.client.delete(f"/flows/{flow_id}").status_code == 204

    assert [v["version"] for v in versions(tenant, flow_id)] == [1, 2]


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
@pytest.mark.parametrize("flow_id", ["00000000-0000-0000-0000-000000000000", "not-a-uuid"])
def test_missing_flow_is_404(tenant: Tenant, method: str, flow_id: str) -> None:
    response = getattr(tenant.client, method)(
        f"/flows/{flow_id}", {"name": "x", "definition": DEFINITION}, format="json"
    )

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
