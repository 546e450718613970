"""Task types. Each executor checks its `config` when a flow is saved and runs one attempt.

Built-ins: transform, python, http, human. Settings add more:
FLOWPLATFORM_EXECUTORS = {"name": "dotted.path.Class"} (a subclass of Executor).
Nothing a tenant writes in a flow definition can run code or reach a host that settings do not
allow-list: python callables must live under FLOWPLATFORM_PYTHON_CALLABLES prefixes, http hosts
must be in FLOWPLATFORM_HTTP_ALLOWED_HOSTS, and both are checked at save time and again at run
time (settings may have changed since).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar
from urllib.parse import urlsplit

import jmespath
from django.conf import settings
from django.utils.module_loading import import_string
from jmespath.exceptions import JMESPathError


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
        result = self._load(path)(input)
        return result if isinstance(result, ExecutorResult) else ExecutorResult(result)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        raise TaskFailed(f"the server redirected ({code}) to {newurl}; redirects are not followed")


def _host_allowed(url: str) -> bool:
    allowed = set(settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS)
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # e.g. an unclosed IPv6 bracket or a non-numeric port
        return False
    return host is not None and (host in allowed or f"{host}:{port}" in allowed)


def _is_http_url(url: object) -> bool:
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


class HttpExecutor(Executor):
    """Sends the resolved input as JSON to `config.url` and stores the JSON response."""

    name = "http"
    config_keys = frozenset({"url", "method", "headers", "timeout"})
    required_config_keys = frozenset({"url"})
    methods = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

    def check_config(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_config(config)
        url = config.get("url")
        if url is not None:
            if not _is_http_url(url):
                problems.append(("url", "must be an http:// or https:// URL"))
            elif not _host_allowed(url):
                problems.append(
                    ("url", f"host of '{url}' is not allowed (FLOWPLATFORM_HTTP_ALLOWED_HOSTS)")
                )
        if str(config.get("method", "POST")).upper() not in self.methods:
            problems.append(("method", f"must be one of {', '.join(sorted(self.methods))}"))
        headers = config.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            problems.append(("headers", "must map header names to string values"))
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
        if not _host_allowed(url):
            raise TaskFailed(f"host of '{url}' is no longer allowed", "NotAllowed")
        method = str(config.get("method", "POST")).upper()
        body = None if method == "GET" else json.dumps(input).encode()
        request = urllib.request.Request(  # noqa: S310 - scheme and host checked above
            url,
            data=body,
            method=method,
            headers={"Content-Type": "application/json", **config.get("headers", {})},
        )
        limit = settings.FLOWPLATFORM_HTTP_MAX_RESPONSE_BYTES
        opener = urllib.request.build_opener(_NoRedirects)
        try:
            with opener.open(request, timeout=config.get("timeout", 10)) as response:
                raw = response.read(limit + 1)
        except urllib.error.HTTPError as exc:
            raise TaskFailed(f"{method} {url} answered {exc.code}", "HttpError") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise TaskFailed(f"{method} {url} failed: {exc}", "HttpError") from None
        if len(raw) > limit:
            raise TaskFailed(f"the response is larger than {limit} bytes", "HttpError")
        try:
            return ExecutorResult(json.loads(raw) if raw else None)
        except ValueError:
            raise TaskFailed("the response is not JSON", "HttpError") from None


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
