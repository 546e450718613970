"""`Idempotency-Key` on POST, PUT and PATCH: a retried write answers the first response again.

A request with the header claims the key (one row per organization and key, committed at once)
before the view runs; its response is stored when it ends. A repeat of the same request replays
that response; a different request with the key is a 422; a repeat that arrives while the first
still runs waits for it, then replays it or, after IDEMPOTENCY_WAIT_SECONDS, is answered 409.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.template.response import SimpleTemplateResponse
from django.utils import timezone
from rest_framework.request import Request

from flowplatform import rls
from flowplatform.canonical import fingerprint
from flowplatform.exceptions import Conflict, InvalidInput
from flowplatform.headers import IDEMPOTENCY_HEADER, REASON_HEADER, REPLAYED_HEADER
from flowplatform.tenancy.models import IdempotencyKey, Organization

IDEMPOTENT_METHODS = frozenset({"POST", "PUT", "PATCH"})
KEY_PATTERN = re.compile(r"[\x20-\x7e]{1,255}")  # printable ASCII
POLL_SECONDS = 0.05
# Each failed claim finds the key freed again only if another request took and released it
# meanwhile; more rounds than this means something else makes the insert fail.
CLAIM_ATTEMPTS = 3


class IdempotencyKeyInProgress(Conflict):
    code = "idempotency_key_in_progress"

    def __init__(self) -> None:
        super().__init__(
            f"a request with this {IDEMPOTENCY_HEADER} is still being processed; retry later"
        )


def invalid_key_error(message: str, type_: str) -> InvalidInput:
    return InvalidInput([(("header", IDEMPOTENCY_HEADER), message, type_)])


def validated_key(raw: str) -> str:
    if not KEY_PATTERN.fullmatch(raw):
        raise invalid_key_error("must be 1 to 255 printable ASCII characters", "invalid")
    return raw


def request_fingerprint(request: Request) -> str:
    """What makes two requests "the same" for a key: the acting identity and everything sent."""
    api_key = request.auth
    return fingerprint(
        {
            "method": request.method,
            "path": request.path.rstrip("/"),
            "query": sorted(
                [name, value] for name, values in request.query_params.lists() for value in values
            ),
            "body": request.data,
            "reason": request.headers.get(REASON_HEADER),
            "actor": [api_key.kind, str(api_key.user_id) if api_key.user_id else None],
        }
    )


@dataclass(frozen=True)
class KeyClaim:
    record: IdempotencyKey
    held: bool  # True: this request does the work; False: `record` is completed, replay it


def claim_key(organization: Organization, key: str, request: Request) -> KeyClaim:
    """Claim `key` for `request`, or find the completed first request to replay.

    Raises InvalidInput when the key was used for a different request, and
    IdempotencyKeyInProgress when the first request is still running after the wait.
    """
    request_hash = request_fingerprint(request)
    deadline = time.monotonic() + settings.IDEMPOTENCY_WAIT_SECONDS
    for _ in range(CLAIM_ATTEMPTS):
        now = timezone.now()
        try:
            # Its own transaction, committed at once, so a concurrent duplicate (blocked on the
            # unique index on PostgreSQL) is released soon; a savepoint inside a transaction.
            with rls.tenant_scope(organization):
                record = IdempotencyKey.objects.create(
                    organization=organization,
                    key=key,
                    method=request.method,
                    path=request.path[:2000],
                    fingerprint=request_hash,
                    expires_at=now + timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS),
                )
            return KeyClaim(record, held=True)
        except IntegrityError as exc:
            conflict = exc
        completed = wait_for_completion(organization, key, request_hash, deadline)
        if completed is not None:
            return KeyClaim(completed, held=False)
        # The key was released, expired or purged meanwhile: claim it again.
    raise conflict


def wait_for_completion(
    organization: Organization, key: str, request_hash: str, deadline: float
) -> IdempotencyKey | None:
    """The key's completed record, once there is one; None when the key is free again."""
    while True:
        with rls.tenant_scope(organization):
            record = IdempotencyKey.objects.filter(organization=organization, key=key).first()
            if record is not None and record.expires_at <= timezone.now():
                IdempotencyKey.objects.filter(pk=record.pk, expires_at=record.expires_at).delete()
                return None
        if record is None:
            return None
        if record.fingerprint != request_hash:
            raise invalid_key_error(
                f"this {IDEMPOTENCY_HEADER} was already used for a different request; "
                "use a new key for a new request",
                "idempotency_key_reused",
            )
        if record.state == IdempotencyKey.State.COMPLETED:
            return record
        if time.monotonic() >= deadline:
            raise IdempotencyKeyInProgress
        time.sleep(POLL_SECONDS)


def settle_key(record: IdempotencyKey, response: HttpResponseBase) -> None:
    """Store the claiming request's response for replay; after a server error (the work's
    transaction rolled back) release the key instead, so a retry does the work."""
    if response.status_code >= 500:
        release_key(record)
        return
    if isinstance(response, SimpleTemplateResponse):
        response.render()  # the exact bytes the client gets, so a replay can send them again
    with rls.tenant_scope(record.organization_id):
        IdempotencyKey.objects.filter(pk=record.pk).update(
            state=IdempotencyKey.State.COMPLETED,
            response_status=response.status_code,
            response_content_type=response.get("Content-Type", ""),
            response_body=response.content.decode(),
            completed_at=timezone.now(),
        )


def release_key(record: IdempotencyKey) -> None:
    """Free the key: the work did not happen, so a retry with it does the work."""
    with rls.tenant_scope(record.organization_id):
        IdempotencyKey.objects.filter(pk=record.pk).delete()


def replay_response(record: IdempotencyKey) -> HttpResponse:
    response = HttpResponse(record.response_body, status=record.response_status)
    if record.response_content_type:
        response["Content-Type"] = record.response_content_type
    else:
        del response["Content-Type"]
    response[REPLAYED_HEADER] = "true"
    return response


class Replay(Exception):
    """Control flow, not an error: raised in `initial` to answer the stored response instead of
    running the handler."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__()
        self.response = response


def claims_key(request: Request) -> bool:
    """Whether `request` claims an Idempotency-Key (a POST, PUT or PATCH with the header)."""
    return request.method in IDEMPOTENT_METHODS and IDEMPOTENCY_HEADER in request.headers


class IdempotentWritesMixin:
    """DRF view hooks for Idempotency-Key; TenantViewSet has them (they need request.auth)."""

    idempotency_record: IdempotencyKey | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        method = request.method.lower()
        if method not in self.http_method_names or getattr(self, method, None) is None:
            return  # DRF answers 405 next: a method the path does not have claims no key
        self.check_request(request)
        if not claims_key(request):
            return
        raw_key = request.headers[IDEMPOTENCY_HEADER]
        claim = claim_key(request.auth.organization, validated_key(raw_key), request)
        if not claim.held:
            raise Replay(replay_response(claim.record))
        self.idempotency_record = claim.record

    def check_request(self, request: Request) -> None:
        """Checks of the request itself, made before its key is claimed (nothing by default)."""

    def handle_exception(self, exc: Exception) -> HttpResponseBase:
        if isinstance(exc, Replay):
            return exc.response
        return super().handle_exception(exc)  # type: ignore[misc]

    def settle_idempotency_key(self, response: HttpResponseBase) -> None:
        """After the handler's transaction ended: keep its response for replays."""
        if self.idempotency_record is not None:
            settle_key(self.idempotency_record, response)
            self.idempotency_record = None

    def release_idempotency_key(self) -> None:
        """The handler's transaction failed to commit: free the key."""
        if self.idempotency_record is not None:
            release_key(self.idempotency_record)
            self.idempotency_record = None
