"""`manage.py db_worker`: django-tasks-db's worker, plus what flowplatform needs of a worker.

- **Reaper**: a thread runs engine.reaper.reap_expired every FLOWPLATFORM_REAP_INTERVAL_SECONDS (and
  once at start), so attempts whose worker was lost (their lease expired) are failed and
  retried by whichever workers remain; no separate process is needed.
- **Database outages**: the worker waits for the database to come back (growing pauses, up to
  10 s) instead of exiting. An attempt it ran whose outcome it could not write is not lost: it
  keeps the outcome and the attempt's lease, and records it once the database is back
  (engine.worker.record_held); its job row is then settled, not run again. After an outage its
  reaper waits one lease before reaping, so live workers renew their leases first.
- **Graceful stop**: SIGTERM (or SIGINT, SIGQUIT) lets the current task finish and then exits
  0, waiting at most --shutdown-timeout seconds (FLOWPLATFORM_WORKER_SHUTDOWN_SECONDS). A task
  still running then, or at a second signal, gets WorkerStopped raised into it: its attempt is
  recorded failed and, if retries remain, queued again for another worker; the worker exits 0.
  A worker idle at the signal exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from argparse import ArgumentParser, ArgumentTypeError
from types import FrameType
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django_tasks_db.management.commands import db_worker

from executions import jobs, leases
from executions.engine import reaper, worker

logger = logging.getLogger("flowplatform.worker")


class Worker(db_worker.Worker):
    def __init__(self, *, shutdown_timeout: float, reap_interval: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shutdown_timeout = shutdown_timeout
        self.reap_interval = reap_interval
        self._stopped = threading.Event()
        self._force = False
        self._unsettled: dict[Any, str | None] = {}  # job → attempt, outcome not written
        self._reap_after = 0.0  # monotonic time before which this worker's reaper waits

    def shutdown(self, signum: int, frame: FrameType | None) -> None:
        if not self.running_task:
            self._stopped.set()
            super().shutdown(signum, frame)  # idle: exit now
            return
        if self.running:  # the first signal: finish the current task, then stop
            self.running = False
            self._stopped.set()
            logger.warning(
                "Received %s - finishing the current task (at most %ss), then exiting.",
                signal.strsignal(signum),
                self.shutdown_timeout,
            )
            signal.signal(signal.SIGALRM, self._timed_out)
            signal.setitimer(signal.ITIMER_REAL, max(self.shutdown_timeout, 0.001))
            return
        logger.warning("Received %s again - stopping the current task.", signal.strsignal(signum))
        self._interrupt("the worker was stopped by a second signal before the task finished")

    def _timed_out(self, signum: int, frame: FrameType | None) -> None:
        self._interrupt(
            f"the worker was stopped and the task did not finish within {self.shutdown_timeout}s"
        )

    def _interrupt(self, message: str) -> None:
        """Raise into the executor (it records the attempt failed and retried). Outside one —
        the worker is recording an outcome — keep checking until that short work is done. A
        task still running a while after the stop was raised into it (it caught even a
        BaseException) is abandoned: the process exits, its lease expires and the reaper
        retries it elsewhere."""
        if not leases.holding():
            self._alarm(0.05)
            return
        if self._force:
            logger.error("the task did not stop; exiting without it (the reaper will retry it)")
            os._exit(1)
        self._force = True
        self._alarm(max(self.shutdown_timeout, 1.0))
        raise leases.WorkerStopped(message)

    def _alarm(self, seconds: float) -> None:
        """Call _timed_out in `seconds`, if this worker's SIGALRM handler is the one installed
        (it is once a signal started the shutdown)."""
        if signal.getsignal(signal.SIGALRM) == self._timed_out:
            signal.setitimer(signal.ITIMER_REAL, seconds)

    def run_task(self, db_task_result: Any) -> None:
        try:
            super().run_task(db_task_result)
        except (OperationalError, InterfaceError):
            # Even the job's outcome could not be written: it would stay RUNNING, and its
            # attempt (perhaps still queued) with it. Settle it once the database returns.
            arguments = (db_task_result.args_kwargs or {}).get("args") or [None]
            self._unsettled[db_task_result.pk] = arguments[0]
            raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)  # the task ended: no timeout pending

    def settle_unsettled(self) -> None:
        """After an outage: first the outcomes this worker held are recorded; the jobs whose
        attempts are thereby settled are marked successful, the others go back to READY (their
        attempt never ran, or was handed back: running the job again runs it; a claim is a
        compare-and-set, so running it twice is harmless)."""
        settled = {str(attempt_id) for attempt_id in worker.record_held()}
        if not self._unsettled:
            return
        done = [job for job, attempt in self._unsettled.items() if attempt in settled]
        again = [job for job in self._unsettled if job not in done]
        jobs.mark_successful(done)
        jobs.requeue(again)
        logger.warning(
            "after the outage: %d job(s) settled with their recorded outcome, %d re-queued",
            len(done),
            len(again),
        )
        self._unsettled.clear()

    def reap_forever(self) -> None:
        """The reaper thread: every worker reaps, so one surviving worker is enough. It also
        records outcomes an outage left held. After a round the database failed, it waits one
        lease before reaping again: every live worker renews its leases (within seconds of the
        database's return) before a lease that ran out during the outage is taken for lost."""
        while True:
            try:
                worker.record_held()
                if time.monotonic() >= self._reap_after:
                    reaper.reap_expired()
            except (OperationalError, InterfaceError):  # the database is away
                logger.warning("reaping expired leases failed: the database is unavailable")
                self._reap_after = time.monotonic() + leases.lease_seconds()
            except Exception:
                logger.exception("reaping expired leases failed")
            finally:
                connection.close()
            if self._stopped.wait(self.reap_interval):
                return

    def run(self) -> None:
        if self.reap_interval > 0:
            threading.Thread(
                target=self.reap_forever, name="flowplatform-reaper", daemon=True
            ).start()
        pause = self.interval or 0.1
        try:
            while True:
                try:
                    self.settle_unsettled()
                    super().run()
                    return
                except (OperationalError, InterfaceError) as exc:
                    # The database went away (django-tasks-db's loop gives up on that): wait for
                    # it, then carry on, instead of taking the worker down with it.
                    if not self.running:
                        return
                    logger.warning("database unavailable (%s); retrying in %.1fs", exc, pause)
                    close_old_connections()
                    connection.close()
                    if self._stopped.wait(pause):
                        return
                    pause = min(pause * 2, 10.0)
        finally:
            self._stopped.set()


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ArgumentTypeError(f"must be a number of seconds, zero or more, not {text!r}")
    return value


class Command(db_worker.Command):
    help = (
        "Run a database background worker: runs task attempts, renews their leases, reaps "
        "attempts of lost workers, and stops gracefully on SIGTERM."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--shutdown-timeout",
            type=seconds,
            default=None,
            help="On SIGTERM, how long to let the current task finish "
            "(default: FLOWPLATFORM_WORKER_SHUTDOWN_SECONDS)",
        )
        parser.add_argument(
            "--reap-interval",
            type=seconds,
            default=None,
            help="Seconds between reaps of expired leases; 0 disables this worker's reaper "
            "(default: FLOWPLATFORM_REAP_INTERVAL_SECONDS)",
        )

    def run_from_argv(self, argv: list[str]) -> None:
        # django-tasks-db refuses a non-database backend while it reads the command line, with
        # a message about its --backend option: say what to set instead.
        if not jobs.uses_job_rows():
            sys.stderr.write(
                "CommandError: db_worker runs the jobs of TASKS_BACKEND=database; this "
                f"environment has TASKS_BACKEND={settings.TASKS_BACKEND} (jobs run in the "
                "process that starts them, no worker needed). Set TASKS_BACKEND=database for "
                "the API processes and the workers alike.\n"
            )
            sys.exit(1)
        super().run_from_argv(argv)

    def handle(
        self,
        *args: Any,
        shutdown_timeout: float | None,
        reap_interval: float | None,
        **options: Any,
    ) -> None:
        timeout = (
            settings.FLOWPLATFORM_WORKER_SHUTDOWN_SECONDS
            if shutdown_timeout is None
            else shutdown_timeout
        )
        interval = (
            settings.FLOWPLATFORM_REAP_INTERVAL_SECONDS if reap_interval is None else reap_interval
        )
        original = db_worker.Worker

        def worker(**kwargs: Any) -> Worker:
            return Worker(shutdown_timeout=timeout, reap_interval=interval, **kwargs)

        db_worker.Worker = worker  # the base command builds its Worker by this name
        try:
            super().handle(*args, **options)
        finally:
            db_worker.Worker = original
        sys.stdout.flush()
