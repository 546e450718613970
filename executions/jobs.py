"""django.tasks entry points. Each job is one task attempt; the engine does the work."""

from __future__ import annotations

import uuid

from django.tasks import task

from executions import engine


@task()
def run_task_attempt(task_execution_id: str, organization_id: str | None = None) -> None:
    """Run one queued attempt, in transactions scoped to its organization (row-level
    security). Jobs enqueued before the organization was passed find it themselves."""
    engine.run_attempt(
        uuid.UUID(task_execution_id), uuid.UUID(organization_id) if organization_id else None
    )
