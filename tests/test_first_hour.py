"""A newcomer's first hour, without a detour: the pages they type, the admin login the demo
gives, what the schema says, what a command logs, how admin names a run."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils.timezone import localtime

from flowplatform import rls

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("page", ["/admin", "/api/docs", "/api/redoc"])
def test_an_html_page_typed_without_its_slash_redirects_to_it(anon_client, page) -> None:
    response = anon_client.get(page)
    assert response.status_code == 302
    assert response["Location"] == f"{page}/"
    assert anon_client.get(f"{page}/", follow=True).status_code == 200


@pytest.mark.parametrize("path", ["/api/schema", "/api/schema/"])
def test_the_schema_answers_with_and_without_a_slash_and_never_redirects(anon_client, path):
    response = anon_client.get(path, HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.1")


@pytest.mark.django_db(transaction=True)  # the demo's flow runs when its transaction commits
def test_the_demo_gives_an_admin_login_that_works(settings) -> None:
    settings.DEBUG = True
    out = io.StringIO()
    call_command("demo", "--admin", stdout=out)
    match = re.search(r"user: admin   password: (\S+)", out.getvalue())
    assert match, out.getvalue()
    browser = Client()
    assert browser.login(username="admin", password=match[1])
    assert browser.get("/admin/").status_code == 200
    again = io.StringIO()
    call_command("demo", "--admin", stdout=again)  # each run: a new password, the old one fails
    assert not Client().login(username="admin", password=match[1])
    assert get_user_model().objects.filter(username="admin").count() == 1


def test_the_demo_admin_is_refused_outside_debug(settings) -> None:
    settings.DEBUG = False
    with pytest.raises(CommandError, match="needs DEBUG on"):
        call_command("demo", "--admin", stdout=io.StringIO())
    assert not get_user_model().objects.exists()


def test_a_bypass_is_audited_only_where_there_is_something_to_bypass(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="flowplatform.audit"), rls.bypass("ops", "a check"):
        pass
    audited = [r for r in caplog.records if "bypassed by ops" in r.getMessage()]
    assert len(audited) == (1 if connection.vendor == "postgresql" else 0)


def test_admin_names_a_run_by_its_flow_its_start_and_a_short_id(tenant) -> None:
    flow = tenant.flow(name="invoice-intake")
    fe = tenant.flow_execution(flow)
    started = localtime(fe.created_at).strftime("%Y-%m-%d %H:%M")
    assert str(fe) == f"invoice-intake · {started} · {str(fe.id)[:8]}"


# The schema says what the server does -------------------------------------------------


@pytest.fixture(scope="module")
def schema(django_db_blocker: Any) -> dict:
    with django_db_blocker.unblock():
        return Client().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()


def component(schema: dict, reference: dict) -> dict:
    return schema["components"]["schemas"][reference["$ref"].rsplit("/", 1)[1]]


def test_every_list_documents_the_bounds_of_limit_and_offset(schema) -> None:
    lists = 0
    for path, operations in schema["paths"].items():
        parameters = {
            p["name"]: p["schema"] for p in operations.get("get", {}).get("parameters", [])
        }
        if "limit" in parameters:
            lists += 1
            assert (parameters["limit"]["minimum"], parameters["limit"]["maximum"]) == (1, 1000)
            assert parameters["offset"]["minimum"] == 0, path
    assert lists >= 6


def test_request_bodies_that_refuse_unknown_fields_say_so(schema) -> None:
    for path, method in [("/task-executions/{id}", "put"), ("/task-outputs", "post")]:
        body = schema["paths"][path][method]["requestBody"]["content"]["application/json"]
        assert component(schema, body["schema"])["additionalProperties"] is False


def test_a_task_outputs_summary_is_a_json_object_not_null(schema) -> None:
    body = schema["paths"]["/task-outputs"]["post"]["requestBody"]["content"]["application/json"]
    summary = component(schema, body["schema"])["properties"]["summary"]
    assert summary["type"] == "object"


def test_writes_document_411_and_the_reexecution_conflict(schema) -> None:
    assert "411" in schema["paths"]["/flow-executions"]["post"]["responses"]
    execute = schema["paths"]["/flow-executions/{id}/execute"]["post"]
    task = next(p for p in execute["parameters"] if p["name"] == "task")
    assert "Not with `only`" in task["description"]


def test_the_schema_says_what_the_server_answers_before_the_application(schema) -> None:
    description = schema["info"]["description"]
    assert "**414**" in description
    assert "**431**" in description


# README stands alone and its examples work as written ------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_links_nothing_outside_the_repository() -> None:
    text = README.read_text()
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)#]+)", text):
        if not target.startswith(("http://", "https://")):
            assert (README.parent / target).exists(), target


def test_every_writing_curl_in_readme_sends_the_key_and_the_content_type() -> None:
    commands = re.findall(r"curl [^\n]*(?:\\\n[^\n]*)*", README.read_text())
    writes = [c for c in commands if re.search(r"-X (POST|PUT|PATCH)|-d ", c)]
    assert writes
    for command in writes:
        assert "Authorization: Bearer" in command, command
        assert "Content-Type: application/json" in command, command
