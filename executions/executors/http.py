"""The `http` task type: a JSON request to an allow-listed host, with no redirects, bounded in
time and size; every check made when a flow is saved is made again at run time. Webhook
deliveries go out by the same rules and code (flowplatform.webhooks.sending)."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from executions.executors.base import Executor, ExecutorResult, TaskFailed
from flowplatform.jsonlimits import too_deep

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Whitespace, control characters and backslashes: URL parsers disagree about them (urlsplit
# drops tabs and newlines, some clients read a backslash as a slash), so such a URL is refused.
_AMBIGUOUS_URL = re.compile(r"[\x00-\x20\x7f\\]")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Where and how the request travels is the executor's business, not a flow definition's.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class HttpTarget:
    """What an http task's URL connects to: exactly the host and port the allow-list checked."""

    scheme: str
    host: str  # lowercase; an IPv6 address without brackets
    port: int  # as written, or the scheme's default
    path: str  # path and query, as written


def http_target(url: object) -> HttpTarget | str:
    """The target of `url`, or why it is refused."""
    not_http = "must be an http:// or https:// URL"
    if not isinstance(url, str):
        return not_http
    if _AMBIGUOUS_URL.search(url):
        return "must not contain spaces, control characters or backslashes"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        return not_http
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return not_http
    if "@" in parts.netloc:
        return f"user info (user@host) in '{url}' is not allowed; send credentials in headers"
    return HttpTarget(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or (443 if parts.scheme == "https" else 80),
        path=urlunsplit(("", "", parts.path or "/", parts.query, "")),
    )


def _allowed_entry(entry: str) -> tuple[str | None, int | None]:
    """An allow-list entry `host`, `host:port`, `[v6]` or `[v6]:port` → (host, port or None)."""
    try:
        parts = urlsplit(f"//{entry.strip()}")
        return parts.hostname, parts.port
    except ValueError:
        return None, None


def host_allowed(target: HttpTarget) -> bool:
    """Exact match: the host equals an entry's (no suffixes, no lookalikes) and, when the entry
    names a port, so does the port."""
    for entry in settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS:
        host, port = _allowed_entry(entry)
        if host == target.host and port in (None, target.port):
            return True
    return False


def _header_problems(headers: object) -> list[str]:
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        return ["must map header names to string values"]
    problems = []
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name) or re.search(r"[\r\n\x00]", value):
            problems.append(f"'{name}' is not a valid header name and value")
        elif name.lower() in _RESERVED_HEADERS:
            problems.append(f"'{name}' is set by the platform and cannot be configured")
    return problems


class HttpExecutor(Executor):
    """Sends the resolved input as JSON to `config.url` and stores the JSON response.

    Safe by construction: it connects to exactly the allow-listed host and port of the URL (no
    proxy, no user info), never follows a redirect, gives the whole exchange one deadline (the
    task's `timeout`, else FLOWPLATFORM_HTTP_TIMEOUT_SECONDS), and stops reading an answer at
    FLOWPLATFORM_HTTP_MAX_RESPONSE_BYTES.
    """

    name = "http"
    config_keys = frozenset({"url", "method", "headers", "timeout"})
    required_config_keys = frozenset({"url"})
    methods = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

    def check_config(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_config(config)
        url = config.get("url")
        if url is not None:
            target = http_target(url)
            if isinstance(target, str):
                problems.append(("url", target))
            elif not host_allowed(target):
                problems.append(
                    ("url", f"host of '{url}' is not allowed (FLOWPLATFORM_HTTP_ALLOWED_HOSTS)")
                )
        if str(config.get("method", "POST")).upper() not in self.methods:
            problems.append(("method", f"must be one of {', '.join(sorted(self.methods))}"))
        problems += [
            ("headers", problem) for problem in _header_problems(config.get("headers", {}))
        ]
        timeout = config.get("timeout", 10)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= 60
        ):
            problems.append(("timeout", "must be a number of seconds, more than 0 and at most 60"))
        return problems

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        url = config["url"]
        target = http_target(url)
        if isinstance(target, str):
            raise TaskFailed(f"'{url}' {target}", "NotAllowed")
        if not host_allowed(target):
            raise TaskFailed(f"host of '{url}' is no longer allowed", "NotAllowed")
        headers = config.get("headers", {})
        if problems := _header_problems(headers):
            raise TaskFailed(f"headers: {'; '.join(problems)}", "NotAllowed")
        method = str(config.get("method", "POST")).upper()
        body = None if method == "GET" else json.dumps(input).encode()
        timeout = config.get("timeout", settings.FLOWPLATFORM_HTTP_TIMEOUT_SECONDS)
        raw = exchange(
            target,
            method,
            body,
            {"Content-Type": "application/json", **headers},
            timeout,
            f"{method} {url}",
        )
        if not raw:
            return ExecutorResult(None)
        try:
            text = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json.loads does
        except UnicodeDecodeError:
            raise TaskFailed("the response is not JSON", "HttpError") from None
        if too_deep(text, settings.MAX_JSON_DEPTH):
            raise TaskFailed(
                f"the response is nested deeper than {settings.MAX_JSON_DEPTH} levels", "HttpError"
            )
        try:
            return ExecutorResult(json.loads(text))
        except ValueError:
            raise TaskFailed("the response is not JSON", "HttpError") from None


def exchange(
    target: HttpTarget,
    method: str,
    body: bytes | None,
    headers: dict[str, str],
    timeout: float,
    what: str,
) -> bytes:
    """One request and its answer's body, within `timeout` seconds in all.

    A socket timeout bounds each wait; a watchdog that shuts the socket down at the deadline
    bounds the total, so a server trickling a byte at a time cannot hold the attempt.
    """
    if target.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    expired = threading.Event()
    sockets: list[socket.socket] = []  # the connection drops its own for a close-delimited answer

    def expire() -> None:
        expired.set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True
    watchdog.start()
    response: http.client.HTTPResponse | None = None
    try:
        connection.connect()
        sockets.append(connection.sock)
        if expired.is_set():
            raise TimeoutError
        connection.request(method, target.path, body=body, headers=headers)
        response = connection.getresponse()
        if response.status in _REDIRECT_STATUSES:
            location = response.getheader("Location", "")
            raise TaskFailed(
                f"{what} answered {response.status}, a redirect to '{location}'; redirects are "
                "not followed",
                "HttpError",
            )
        if not 200 <= response.status < 300:
            raise TaskFailed(f"{what} answered {response.status}", "HttpError")
        raw = _read_capped(response, settings.FLOWPLATFORM_HTTP_MAX_RESPONSE_BYTES)
        if expired.is_set():  # the watchdog cut the answer short
            raise TimeoutError
        return raw
    except (TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:
        if expired.is_set() or isinstance(exc, TimeoutError):
            raise TaskFailed(f"{what} did not finish within {timeout:g} s", "HttpError") from None
        raise TaskFailed(f"{what} failed: {exc}", "HttpError") from None
    finally:
        watchdog.cancel()
        if response is not None:  # holds the socket when the answer is delimited by closing
            response.close()
        connection.close()


def _read_capped(response: http.client.HTTPResponse, limit: int) -> bytes:
    """The body, read in chunks and never more than `limit` + 1 bytes of it."""
    declared = response.getheader("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TaskFailed(
            f"the response is larger than {limit} bytes (Content-Length: {declared})", "HttpError"
        )
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read(min(_READ_CHUNK, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise TaskFailed(f"the response is larger than {limit} bytes", "HttpError")
    return b"".join(chunks)
