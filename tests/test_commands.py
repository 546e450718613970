"""Management commands: create_org, create_api_key, demo."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from executions.models import FlowExecution
from flowplatform.tenancy.models import ApiKey, Organization
from flows.models import Flow

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def client_for(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_create_api_key_prints_a_working_key_alone_on_the_last_line():
    output = run("create_api_key", "--org", "acme", "--create-org", "--name", "ci")
    key = output.strip().splitlines()[-1]
    assert key.startswith("fp_")
    assert " " not in key
    assert client_for(key).get("/task-executions").status_code == 200
    stored = ApiKey.objects.get()
    assert stored.name == "ci"
    assert key not in {stored.key_hash, stored.prefix}


def test_create_api_key_for_a_missing_org_fails_without_create_org():
    with pytest.raises(CommandError, match="--create-org"):
        run("create_api_key", "--org", "nobody")
    assert not Organization.objects.exists()


def test_create_user_key_attributes_changes_to_the_user():
    user_id = uuid.uuid4()
    output = run(
        "create_api_key",
        "--org",
        "acme",
        "--create-org",
        "--kind",
        "user",
        "--user-id",
        str(user_id),
    )
    api_key = ApiKey.objects.get()
    assert api_key.kind == "user"
    assert api_key.default_actor == str(user_id)
    assert output.strip().splitlines()[-1].startswith("fp_")


def test_user_key_without_user_id_is_refused():
    with pytest.raises(CommandError, match="user"):
        run("create_api_key", "--org", "acme", "--create-org", "--kind", "user")
    assert not ApiKey.objects.exists()
    assert not Organization.objects.exists()  # the whole command is one transaction


def test_create_org_rejects_duplicates_and_bad_slugs():
    assert "created organization acme" in run("create_org", "acme", "--name", "Acme Inc")
    with pytest.raises(CommandError, match="already exists"):
        run("create_org", "acme")
    with pytest.raises(CommandError, match="lowercase"):
        run("create_org", "Not A Slug")


@pytest.mark.django_db(transaction=True)
def test_demo_leaves_a_document_review_waiting_for_a_person_and_a_working_key():
    output = run("demo", "--base-url", "http://example.test")
    key = next(line.split("KEY=")[1] for line in output.splitlines() if "export KEY=" in line)
    client = client_for(key)
    flows = client.get("/flows").json()
    assert sorted(flow["name"] for flow in flows["results"]) == [
        "document-pages",
        "document-review",
        "word-stats",
    ]
    execution = FlowExecution.objects.get()
    assert execution.status == "in_progress"
    body = client.get(f"/flow-executions/{execution.id}").json()
    assert body["task_outputs_summary"]["tasks"]["extract"]["pages"] == 1
    review = client.get(f"/task-executions?flow_execution_id={execution.id}&task_name=review")
    assert review.json()["results"][0]["status"] == "running"
    assert f"http://example.test/flow-executions/{execution.id}" in output


@pytest.mark.django_db(transaction=True)
def test_demo_run_twice_reuses_the_org_and_flows():
    run("demo")
    run("demo")
    assert Organization.objects.filter(slug="demo").count() == 1
    assert sorted(Flow.objects.values_list("name", "current_version__version")) == [
        ("document-pages", 1),
        ("document-review", 1),
        ("word-stats", 1),
    ]  # the examples did not change, so no new versions
    assert FlowExecution.objects.count() == 2
    assert ApiKey.objects.count() == 2


def test_migrations_match_the_models():
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
