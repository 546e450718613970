"""examples/document-pages.yaml, used as README's "Loops" tells a user to: POST /flows with the
YAML, POST /flow-executions with a document, read extract's iterations, correct one page and see
that only its item is classified again downstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from executions.models import FlowExecution
from executions.selectors import freshness_violations
from tests.helpers.flows import get_json

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "document-pages.yaml"
DOCUMENT = {
    "title": "Quarterly report",
    "pages": [
        "Revenue grew in every region while costs stayed flat.",
        "Region | Revenue | Costs",
        "The board asks for a review of the numbers.",
        "",
    ],
}


def started(tenant: Any) -> dict[str, Any]:
    """The flow created from the example's YAML and an execution of it, as README shows."""
    created = tenant.client.post(
        "/flows", {"name": "document-pages", "definition": EXAMPLE.read_text()}, format="json"
    )
    assert created.status_code == 201, created.json()
    response = tenant.client.post(
        "/flow-executions",
        {"flow_id": created.json()["id"], "input": {"document": DOCUMENT}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()


def attempts(tenant: Any, fe: str, task: str) -> list[dict[str, Any]]:
    return get_json(
        tenant,
        f"/task-executions?flow_execution_id={fe}&task_name={task}&ordering=task_execution_idx",
    )["results"]


def output_of(tenant: Any, fe: str, task: str) -> Any:
    outputs = get_json(tenant, f"/task-outputs?flow_execution_id={fe}&task_name={task}")
    return outputs["results"][-1]


def test_the_example_splits_extracts_classifies_and_reports_page_by_page(tenant) -> None:
    fe = started(tenant)
    assert get_json(tenant, f"/flow-executions/{fe['id']}")["status"] == "completed"
    extract = attempts(tenant, fe["id"], "extract")
    assert [a["iteration"] for a in extract] == [0, 1, 2, 3]
    assert [a["task_execution_idx"] for a in extract] == [0, 1, 2, 3]
    assert [a["output"]["page"] for a in extract] == [0, 1, 2, 3]
    assert [a["output"]["words"] for a in extract] == [9, 5, 9, 0]
    classified = output_of(tenant, fe["id"], "classify")
    assert classified["output"] == [
        {"page": 0, "kind": "text"},
        {"page": 1, "kind": "table"},
        {"page": 2, "kind": "text"},
        {"page": 3, "kind": "blank"},
    ]
    assert classified["summary"]["iterations"] == {"total": 4, "completed": 4, "failed": 0}
    report = output_of(tenant, fe["id"], "report")["output"]
    assert report == {"title": "Quarterly report", "pages": 4, "table": 1, "text": 2, "blank": 1}
    listed = get_json(
        tenant, f"/task-executions?flow_execution_id={fe['id']}&task_name=extract&iteration=2"
    )
    assert [a["iteration"] for a in listed["results"]] == [2]


def test_correcting_page_2_reclassifies_only_page_2_and_reports_again(tenant) -> None:
    fe = started(tenant)["id"]
    before = {a["id"] for a in attempts(tenant, fe, "classify")}
    page_2 = next(a for a in attempts(tenant, fe, "extract") if a["iteration"] == 2)

    body = tenant.client.get(f"/task-executions/{page_2['id']}").json()
    body.update(
        status="completed",
        output={"page": 2, "words": 5, "text": "Quarter | Board | Review"},
    )
    response = tenant.client.put(
        f"/task-executions/{page_2['id']}?execute_flow=true", body, format="json"
    )

    assert response.status_code == 200, response.json()
    answer = response.json()
    assert answer["iteration"] == 2
    assert answer["stale_tasks"] == ["classify", "report"]
    assert answer["stale_iterations"] == {"classify": [0, 1, 2, 3]}
    assert get_json(tenant, f"/flow-executions/{fe}")["status"] == "completed"
    new = [a for a in attempts(tenant, fe, "classify") if a["id"] not in before]
    assert sorted(a["iteration"] for a in new) == [0, 1, 2, 3]
    assert [a["iteration"] for a in new if a["reused_from"] is None] == [2]
    assert all(a["status"] == "completed" for a in new)
    old = {a["iteration"]: a["id"] for a in attempts(tenant, fe, "classify") if a["id"] in before}
    assert {a["iteration"]: a["reused_from"] for a in new if a["reused_from"]} == {
        i: old[i] for i in (0, 1, 3)
    }
    assert len(attempts(tenant, fe, "extract")) == 4  # no other page ran again
    assert len(attempts(tenant, fe, "split")) == 1
    reports = attempts(tenant, fe, "report")
    assert [a["status"] for a in reports] == ["stale", "completed"]
    assert reports[-1]["reused_from"] is None
    assert reports[0]["stale_cause"]["upstream_task"] == "extract"
    assert reports[0]["stale_cause"]["upstream_iteration"] == 2
    assert output_of(tenant, fe, "report")["output"] == {
        "title": "Quarterly report",
        "pages": 4,
        "table": 2,
        "text": 1,
        "blank": 1,
    }
    extract = output_of(tenant, fe, "extract")["output"]
    assert extract[2]["text"] == "Quarter | Board | Review"
    assert extract[1]["text"] == "Region | Revenue | Costs"
    assert freshness_violations(FlowExecution.objects.get(pk=fe)) == []
