"""django.tasks entry points. Each job is one task attempt; the engine does the work."""

from __future__ import annotations

import uuid

from django.tasks import task

from executions import engine


@task()
def run_task_attempt(task_execution_id: str) -> None:
    engine.run_attempt(uuid.UUID(task_execution_id))
