"""Faults the tests cause for real, rather than by replacing the product's functions."""

from __future__ import annotations

from typing import Any

from flows import definitions
from flows.models import FlowVersion


def make_definition_unloadable(flow_version_id: Any) -> None:
    """The stored definition of this version names a task type that no longer exists (its
    executor was removed from FLOWPLATFORM_EXECUTORS): loading it now fails. The version's
    cached spec is dropped, as a new process would not have it."""
    version = FlowVersion.objects.get(pk=flow_version_id)
    parsed = dict(version.parsed)
    parsed["tasks"] = [{**task, "type": "removed-plugin"} for task in parsed["tasks"]]
    FlowVersion.objects.filter(pk=flow_version_id).update(parsed=parsed)
    definitions._SPEC_CACHE.pop(flow_version_id, None)
