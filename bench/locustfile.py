"""Load for `python -m bench api`: one user class per endpoint, each run alone by locust
headless (`locust -f bench/locustfile.py --headless … ClassName`). Users send back to back
(no wait), so throughput is what the server sustains. BENCH_SEED names the JSON file of
seeded rows and the API key (bench.child.seed_api)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from locust import FastHttpUser, constant, task

SEED = json.loads(Path(os.environ["BENCH_SEED"]).read_text())
AUTH = {"Authorization": f"Bearer {SEED['key']}"}
WRITE = {**AUTH, "Content-Type": "application/json"}


class _User(FastHttpUser):
    abstract = True
    wait_time = constant(0)


class ListTaskExecutions(_User):
    @task
    def list_task_executions(self) -> None:
        flow_execution = random.choice(SEED["flow_execution_ids"])
        self.client.get(
            f"/task-executions?flow_execution_id={flow_execution}&status=completed,stale&limit=20",
            headers=AUTH,
            name="GET /task-executions?flow_execution_id&status&limit=20",
        )


class GetTaskExecution(_User):
    @task
    def get_task_execution(self) -> None:
        pk = random.choice(SEED["task_execution_ids"])
        self.client.get(f"/task-executions/{pk}", headers=AUTH, name="GET /task-executions/{id}")


class CorrectTaskExecution(_User):
    @task
    def correct_task_execution(self) -> None:
        attempt = random.choice(SEED["corrections"])
        body = {**attempt, "status": "completed", "output": {"v": random.randrange(10**9)}}
        self.client.put(
            f"/task-executions/{attempt['id']}",
            data=json.dumps(body),
            headers=WRITE,
            name="PUT /task-executions/{id} (execute_flow=false)",
        )


class Floor(_User):
    @task
    def floor(self) -> None:
        pk = random.choice(SEED["task_execution_ids"])
        self.client.get(
            f"/bench/floor/{SEED['organization_id']}/{pk}", name="GET floor (one indexed SELECT)"
        )
