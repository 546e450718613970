"""Task types. Each executor checks its `config` when a flow is saved and runs one attempt.

Built-ins: transform, python, http, human. Settings add more:
FLOWPLATFORM_EXECUTORS = {"name": "dotted.path.Class"} (a subclass of Executor).
Nothing a tenant writes in a flow definition can run code or reach a host that settings do not
allow-list: python callables must live under FLOWPLATFORM_PYTHON_CALLABLES prefixes, http hosts
must be in FLOWPLATFORM_HTTP_ALLOWED_HOSTS, and both are checked at save time and again at run
time (settings may have changed since).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import ssl
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import jmespath
from django.conf import settings
from django.utils.module_loading import import_string
from jmespath.exceptions import JMESPathError

from flowplatform.jsonlimits import too_deep


@dataclass(frozen=True)
class ExecutorResult:
    """What an attempt produced. A python callable may return one to give its own summary."""

    output: Any
    summary: dict[str, Any] | None = None


class TaskFailed(Exception):
    """An executor's clean failure: recorded as the attempt's error (type, message)."""

    def __init__(self, message: str, error_type: str = "TaskFailed") -> None:
        super().__init__(message)
        self.error_type = error_type


class Executor:
    name: ClassVar[str]
    # A human task is not run by a worker; it waits until a person completes it.
    waits_for_person: ClassVar[bool] = False
    config_keys: ClassVar[frozenset[str]] = frozenset()
    required_config_keys: ClassVar[frozenset[str]] = frozenset()

    def check_config(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        """Problems with `config` as (config key or "", message); empty when it is fine."""
        problems = [(key, "unknown config key") for key in sorted(set(config) - self.config_keys)]
        problems += [
            (key, "is required") for key in sorted(self.required_config_keys - set(config))
        ]
        return problems

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        raise NotImplementedError


def default_summary(output: Any) -> dict[str, Any]:
    """A small description of an output when its executor gives none."""
    if isinstance(output, dict):
        return {"type": "object", "keys": len(output)}
    if isinstance(output, list):
        return {"type": "array", "items": len(output)}
    if isinstance(output, str):
        return {"type": "string", "characters": len(output)}
    if output is None:
        return {"type": "null"}
    return {"type": type(output).__name__, "value": output}


class TransformExecutor(Executor):
    """Output = the resolved input, or `config.expression` (JMESPath) applied to it."""

    name = "transform"
    config_keys = frozenset({"expression"})

    def check_config(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_config(config)
        if "expression" in config:
            try:
                jmespath.compile(str(config["expression"]))
            except JMESPathError as exc:
                problems.append(("expression", f"not a valid JMESPath expression: {exc}"))
        return problems

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        if "expression" not in config:
            return ExecutorResult(input)
        try:
            return ExecutorResult(jmespath.search(str(config["expression"]), input))
        except JMESPathError as exc:
            raise TaskFailed(str(exc), "ExpressionError") from None


def _callable_allowed(path: str) -> bool:
    module = path.partition(":")[0]
    return any(
        module == prefix or module.startswith(prefix.rstrip(".") + ".")
        for prefix in settings.FLOWPLATFORM_PYTHON_CALLABLES
    )


class PythonExecutor(Executor):
    """Calls `config.callable` ("package.module:function") with the resolved input."""

    name = "python"
    config_keys = frozenset({"callable"})
    required_config_keys = frozenset({"callable"})

    def check_config(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_config(config)
        path = config.get("callable")
        if path is None:
            return problems
        if not isinstance(path, str) or path.count(":") != 1:
            return [*problems, ("callable", "must be 'package.module:function'")]
        if not _callable_allowed(path):
            return [
                *problems,
                (
                    "callable",
                    f"'{path}' is not under an allowed prefix (FLOWPLATFORM_PYTHON_CALLABLES)",
                ),
            ]
        try:
            self._load(path)
        except (ImportError, AttributeError) as exc:
            problems.append(("callable", f"cannot be imported: {exc}"))
        return problems

    @staticmethod
    def _load(path: str) -> Any:
        module, _, function = path.partition(":")
        target = import_string(f"{module}.{function}")
        if not callable(target):
            raise AttributeError(f"{path} is not callable")
        real = getattr(target, "__module__", None) or ""
        if not _callable_allowed(f"{real}:"):
            # e.g. a function an allowed module merely imported from elsewhere
            raise AttributeError(f"{path} is defined in '{real}', which is not allowed")
        return target

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        path = config["callable"]
        if not _callable_allowed(path):
            raise TaskFailed(f"'{path}' is no longer allowed", "NotAllowed")
        try:
            function = self._load(path)
        except (ImportError, AttributeError) as exc:
            raise TaskFailed(f"'{path}' cannot be called: {exc}", "NotAllowed") from None
        result = function(input)
        return result if isinstance(result, ExecutorResult) else ExecutorResult(result)


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
        raw = _exchange(
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


def _exchange(
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


class HumanExecutor(Executor):
    """Does nothing by itself: the attempt waits, running, until a person completes it."""

    name = "human"
    waits_for_person = True
    config_keys = frozenset({"instructions"})

    def run(self, input: Any, config: dict[str, Any]) -> ExecutorResult:
        raise TaskFailed("a human task is completed by a person, not run", "NotRunnable")


BUILTIN_EXECUTORS: dict[str, type[Executor]] = {
    executor.name: executor
    for executor in (TransformExecutor, PythonExecutor, HttpExecutor, HumanExecutor)
}


def executors() -> dict[str, Executor]:
    """Every registered task type, built-ins first, then FLOWPLATFORM_EXECUTORS (read-only)."""
    return _registry(tuple(sorted(settings.FLOWPLATFORM_EXECUTORS.items())))


@lru_cache(maxsize=8)
def _registry(configured: tuple[tuple[str, str], ...]) -> dict[str, Executor]:
    # Executors are stateless, so one instance each serves every call; keyed by the setting's
    # value, a changed FLOWPLATFORM_EXECUTORS (tests, reloads) gets its own registry.
    registry: dict[str, Executor] = {name: cls() for name, cls in BUILTIN_EXECUTORS.items()}
    for name, path in configured:
        cls = import_string(path)
        if not (isinstance(cls, type) and issubclass(cls, Executor)):
            raise TypeError(f"FLOWPLATFORM_EXECUTORS['{name}'] = {path} is not an Executor")
        registry[name] = cls()
    return registry


def get_executor(name: str) -> Executor:
    return executors()[name]
