"""Leases: how a worker's claim on a running attempt outlives neither the worker nor the task.

A worker claims an attempt (queued → running) with a lease: `lease_owner` (this process,
host:pid) and `lease_expires_at` (database time + FLOWPLATFORM_LEASE_SECONDS). While the
executor runs, one heartbeat thread per process renews the leases this process holds every
third of that time. A worker that dies (SIGKILL, a lost machine) stops renewing; once its lease
has expired the reaper (engine.reaper.reap_expired: every db_worker runs it periodically, and
`manage.py reap_expired`) fails the attempt as lost and starts the next one if retries remain.

Database time (`Now()`) on both sides, so workers on several machines need no clock agreement.
A renewal changes only a running attempt this process still owns: one the reaper took, a
person cancelled or another worker finished is left alone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import DateTimeField, ExpressionWrapper
from django.db.models.functions import Now

logger = logging.getLogger("flowplatform.leases")


class WorkerStopped(BaseException):
    """Raised into a task that a stopping worker could not wait for (db_worker's shutdown
    timeout, or a second SIGTERM): the attempt is recorded failed and retried elsewhere.

    A BaseException, like KeyboardInterrupt: a task's own `except Exception:` must not take
    the stop for one of its errors and carry on (or even record a result)."""


class WorkerLost(Exception):
    """What the reaper records for an attempt whose worker stopped renewing its lease: its
    error type, and the exception of the lost worker's django-tasks-db job row."""


WORKER_LOST = WorkerLost.__name__
WORKER_LOST_PATH = f"{WorkerLost.__module__}.{WorkerLost.__qualname__}"


def worker_identity() -> str:
    """This process, as `lease_owner` shows it (computed per call: a fork gets its own pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_seconds() -> float:
    return float(settings.FLOWPLATFORM_LEASE_SECONDS)


def expiry() -> ExpressionWrapper:
    """Database time plus one lease."""
    return ExpressionWrapper(
        Now() + timedelta(seconds=lease_seconds()), output_field=DateTimeField()
    )


class _Heartbeat:
    """The process's heartbeat thread and the leases it renews (attempt id → organization).

    Started on the first lease held and idle-cheap: a task that ends before the first beat
    costs a dict insert and delete, no query. The thread closes its database connection
    whenever it holds no lease, so an idle process keeps no extra connection open.
    """

    # After a failed renewal (the database away), the next try comes this soon: once the
    # database is back, leases are renewed before other workers' reapers look at them.
    RETRY_SECONDS = 1.0

    def __init__(self) -> None:
        self._held: dict[uuid.UUID, tuple[uuid.UUID, str]] = {}
        # Leases of attempts whose outcome this process holds but could not record yet (the
        # database was away: engine.worker records it once it is back). Not "holding" in the
        # sense of holding(): no executor runs for them.
        self._kept: dict[uuid.UUID, tuple[uuid.UUID, str]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextmanager
    def hold(self, attempt_id: uuid.UUID, organization_id: uuid.UUID, owner: str) -> Iterator[None]:
        # No lock around the main thread's bookkeeping: a signal handler (db_worker's stop)
        # asks `holding()` on this thread, and must never wait for a lock this thread holds.
        # Single dict operations are atomic; the heartbeat thread copies the dict under its
        # own lock only.
        self._held[attempt_id] = (organization_id, owner)
        self._ensure_thread()
        try:
            yield
        finally:
            self._held.pop(attempt_id, None)

    def keep(self, attempt_id: uuid.UUID, organization_id: uuid.UUID, owner: str) -> None:
        """Go on renewing this lease after its executor returned, until release()."""
        self._kept[attempt_id] = (organization_id, owner)
        self._ensure_thread()

    def release(self, attempt_id: uuid.UUID) -> None:
        self._kept.pop(attempt_id, None)

    def _ensure_thread(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="flowplatform-heartbeat", daemon=True
                )
                self._thread.start()

    def holding(self) -> bool:
        """Lock-free: a signal handler asks."""
        return bool(self._held)

    def _run(self) -> None:
        pause = lease_seconds() / 3
        while True:
            self._wake.wait(pause)
            self._wake.clear()
            pause = lease_seconds() / 3
            held = {**self._kept, **self._held}
            if not held:
                connection.close()
                continue
            try:
                self.renew(held)
            except Exception:  # the database may be away: try again soon
                logger.exception("renewing %d lease(s) failed", len(held))
                connection.close()
                pause = min(pause, self.RETRY_SECONDS)

    def renew(self, held: dict[uuid.UUID, tuple[uuid.UUID, str]]) -> int:
        from executions.models import TaskExecution
        from flowplatform import rls

        renewed = 0
        by_org: dict[tuple[uuid.UUID, str], list[uuid.UUID]] = {}
        for attempt_id, key in held.items():
            by_org.setdefault(key, []).append(attempt_id)
        for (organization_id, owner), ids in by_org.items():
            with rls.tenant_scope(organization_id):
                renewed += TaskExecution.objects.filter(
                    pk__in=ids, status=TaskExecution.Status.RUNNING, lease_owner=owner
                ).update(lease_expires_at=expiry())
        return renewed


heartbeat = _Heartbeat()


def holding() -> bool:
    """Does this process hold a lease right now (is an executor running here)?"""
    return heartbeat.holding()
