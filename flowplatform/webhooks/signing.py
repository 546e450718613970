"""Standard Webhooks signatures (https://www.standardwebhooks.com): the secret is `whsec_` and
base64 of random bytes; each delivery is signed as `v1,` + base64(HMAC-SHA256(those bytes,
"{webhook-id}.{webhook-timestamp}.{body}")). Pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh endpoint secret: 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_problem(secret: str) -> str | None:
    """Why `secret` cannot sign (None if it can): `whsec_` and base64 of 24 to 64 bytes."""
    raw = secret.removeprefix(PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError:
        return "must be 'whsec_' followed by base64 (as generated when it is left out)"
    if not 24 <= len(key) <= 64:
        return "must encode 24 to 64 random bytes"
    return None


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }
