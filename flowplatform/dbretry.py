"""Running a transaction again when PostgreSQL aborted it to let a concurrent one through.

PostgreSQL resolves a deadlock by aborting one of the transactions in it (SQLSTATE 40P01
`deadlock_detected`) and, at REPEATABLE READ or SERIALIZABLE, aborts a transaction that a
concurrent one's writes invalidated (40001 `serialization_failure`). Neither says anything
about the request: the other transaction went on, and the same transaction run again from its
start normally succeeds. So the service runs it again, a few times, each after a short random
pause (the two would otherwise collide again in step), and only then lets the error through
(the API answers 503). Every other error propagates at once.

`retrying(fn)` takes a callable that runs one whole transaction: every API request's
transaction goes through it (flowplatform.api.views.TenantViewSet), and any other caller (a
worker recording an attempt's outcome, a command) can wrap its transactions the same way.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, connections

logger = logging.getLogger("flowplatform.dbretry")

RETRYABLE_SQLSTATES = {"40P01": "deadlock_detected", "40001": "serialization_failure"}
# Full jitter: the n-th retry waits a random time up to min(MAX, BASE * 2**(n-1)).
BACKOFF_BASE_SECONDS = 0.02
BACKOFF_MAX_SECONDS = 0.5


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, if it has one. Django's DatabaseError wraps the
    driver's error (psycopg's, with `.sqlstate`) as its `__cause__`."""
    code = getattr(exc, "sqlstate", None)
    if code is None and isinstance(exc, DatabaseError):
        code = getattr(exc.__cause__, "sqlstate", None)
    return code


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or a serialization failure: the transaction may simply be run again."""
    return sqlstate(exc) in RETRYABLE_SQLSTATES


def backoff_seconds(retry: int) -> float:
    """How long to wait before the `retry`-th retry (1, 2, …): random, growing, capped."""
    return random.uniform(0, min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (retry - 1)))


def retrying[T](
    transaction_fn: Callable[[], T],
    *,
    retries: int | None = None,
    what: str = "a transaction",
    using: str = "default",
) -> T:
    """`transaction_fn()`, run again from its start while it fails with a deadlock or a
    serialization failure, at most `retries` more times (default: FLOWPLATFORM_DB_RETRIES);
    then that error propagates. Each retry is logged (warning, naming `what`).

    `transaction_fn` must run one whole transaction (e.g. an outermost `transaction.atomic()`
    or `rls.tenant_scope()`) and do nothing outside it that must not happen twice: when it
    raises, its transaction has been rolled back, and on-commit hooks it registered (jobs) were
    dropped with it. Called inside a transaction that is already open, it runs once, without
    retries: only the outer transaction's owner can roll back what holds the locks the other
    transaction waits for.
    """
    if retries is None:
        retries = settings.FLOWPLATFORM_DB_RETRIES
    if connections[using].in_atomic_block:
        return transaction_fn()
    retry = 0
    while True:
        try:
            return transaction_fn()
        except Exception as exc:
            code = sqlstate(exc)
            if code not in RETRYABLE_SQLSTATES:
                raise
            retry += 1
            if retry > retries:
                logger.warning(
                    "%s: %s (SQLSTATE %s) on attempt %d of %d; giving up",
                    what,
                    RETRYABLE_SQLSTATES[code],
                    code,
                    retry,
                    retries + 1,
                )
                raise
            delay = backoff_seconds(retry)
            logger.warning(
                "%s: %s (SQLSTATE %s), rolled back; running it again in %.0f ms (retry %d of %d)",
                what,
                RETRYABLE_SQLSTATES[code],
                code,
                delay * 1000,
                retry,
                retries,
            )
            time.sleep(delay)
