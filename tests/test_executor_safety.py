"""Executors stay inside what settings allow: http tasks reach exactly the allow-listed host and
port, never follow a redirect, finish within their timeout and never read more than the response
limit; python tasks call only allow-listed functions. No real network: local servers only."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from executions.executors import HttpExecutor, PythonExecutor, TaskFailed
from executions.models import TaskExecution
from flows.models import Flow
from tests.helpers.tenants import Tenant

CHUNK = b"x" * 65536
ENDLESS_BYTES = 256 * 1024 * 1024  # what the endless answers would send if nobody stopped them


class Handler(BaseHTTPRequestHandler):
    """Answers by path; every request is recorded on the server (path, method, body)."""

    protocol_version = "HTTP/1.1"
    server: Server

    def do_GET(self) -> None:
        self.handle_any()

    def do_POST(self) -> None:
        self.handle_any()

    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.hits.append((self.path, self.command, body))
        answer = getattr(self, "answer_" + self.path.strip("/").split("?")[0].replace("-", "_"))
        answer()

    def send_json(self, value: Any, status: int = 200) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def redirect(self, status: int, location: str) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def answer_ok(self) -> None:
        self.send_json({"ok": True, "host": self.headers.get("Host")})

    def answer_redirect_here(self) -> None:
        self.redirect(302, f"http://127.0.0.1:{self.server.server_address[1]}/ok")

    def answer_redirect_relative(self) -> None:
        self.redirect(307, "/ok")

    def answer_redirect_away(self) -> None:
        self.redirect(301, f"{self.server.elsewhere}/ok")

    def answer_silent(self) -> None:
        self.server.release.wait(30)

    def answer_trickle(self) -> None:
        """Headers at once, then one byte of a 1,000-byte body every 0.1 s."""
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.trickle()

    def answer_trickle_unannounced(self) -> None:
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.trickle()

    def trickle(self) -> None:
        for _ in range(1000):
            if self.server.release.wait(0.1):
                return
            self.wfile.write(b" ")
            self.wfile.flush()

    def answer_big_declared(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(ENDLESS_BYTES))
        self.end_headers()
        self.stream(lambda chunk: chunk)

    def answer_big_unannounced(self) -> None:
        """No Content-Length: the body ends when the connection closes."""
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.stream(lambda chunk: chunk)

    def answer_big_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.stream(lambda chunk: b"%x\r\n%s\r\n" % (len(chunk), chunk))

    def answer_deep(self) -> None:
        data = b"[" * 100_000 + b"]" * 100_000
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, frame: Callable[[bytes], bytes]) -> None:
        """Send up to ENDLESS_BYTES, counting what the client let through before it hung up."""
        sent = 0
        try:
            while sent < ENDLESS_BYTES and not self.server.release.is_set():
                self.wfile.write(frame(CHUNK))
                sent += len(CHUNK)
        except OSError:
            pass
        self.server.sent[self.path] = sent
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    hits: list[tuple[str, str, bytes]]
    sent: dict[str, int]
    release: threading.Event
    elsewhere: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def port(self) -> int:
        return self.server_address[1]


def start_server() -> Server:
    server = Server(("127.0.0.1", 0), Handler)
    server.hits, server.sent, server.release = [], {}, threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def servers(settings: Any) -> Iterator[tuple[Server, Server]]:
    """`allowed` is on the allow-list (by host and port); `other` is not."""
    allowed, other = start_server(), start_server()
    allowed.elsewhere, other.elsewhere = other.base, allowed.base
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = [f"127.0.0.1:{allowed.port}"]
    settings.FLOWPLATFORM_HTTP_MAX_RESPONSE_BYTES = 1000
    yield allowed, other
    for server in (allowed, other):
        server.release.set()
        server.shutdown()
        server.server_close()


def call(url: str, **config: Any) -> Any:
    return HttpExecutor().run({"q": 1}, {"url": url, **config}).output


def failure(url: str, **config: Any) -> TaskFailed:
    with pytest.raises(TaskFailed) as caught:
        call(url, **config)
    return caught.value


def test_an_allowed_host_is_called_with_the_input(servers: tuple[Server, Server]) -> None:
    allowed, _ = servers

    assert call(f"{allowed.base}/ok") == {"ok": True, "host": f"127.0.0.1:{allowed.port}"}
    assert allowed.hits == [("/ok", "POST", b'{"q": 1}')]


# --- redirects: never followed ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/redirect-away", id="to-a-host-off-the-list"),
        pytest.param("/redirect-here", id="to-the-same-allowed-host"),
        pytest.param("/redirect-relative", id="relative-307"),
    ],
)
def test_a_redirect_is_never_followed(servers: tuple[Server, Server], path: str) -> None:
    allowed, other = servers

    error = failure(f"{allowed.base}{path}")

    assert "redirects are not followed" in str(error)
    assert error.error_type == "HttpError"
    assert [hit[0] for hit in allowed.hits] == [path]  # /ok was never requested
    assert other.hits == []


# --- timeouts --------------------------------------------------------------------------------


def test_a_server_that_never_answers_fails_the_attempt_within_the_tasks_timeout(
    servers: tuple[Server, Server],
) -> None:
    allowed, _ = servers
    started = time.monotonic()

    error = failure(f"{allowed.base}/silent", timeout=0.5)

    assert time.monotonic() - started < 3
    assert "did not finish within 0.5 s" in str(error)
    assert error.error_type == "HttpError"


def test_without_a_task_timeout_the_setting_bounds_the_call(
    servers: tuple[Server, Server], settings: Any
) -> None:
    allowed, _ = servers
    settings.FLOWPLATFORM_HTTP_TIMEOUT_SECONDS = 1
    started = time.monotonic()

    error = failure(f"{allowed.base}/silent")

    assert 0.9 < time.monotonic() - started < 4
    assert "did not finish within 1 s" in str(error)


@pytest.mark.parametrize("path", ["/trickle", "/trickle-unannounced"])
def test_a_server_trickling_its_answer_is_cut_off_at_the_timeout(
    servers: tuple[Server, Server], path: str
) -> None:
    """Each byte comes well within the timeout; the whole answer would take 100 s."""
    allowed, _ = servers
    started = time.monotonic()

    error = failure(f"{allowed.base}{path}", timeout=1)

    assert time.monotonic() - started < 4
    assert "did not finish within 1 s" in str(error)


def test_a_host_that_refuses_connections_fails_cleanly(settings: Any) -> None:
    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = [f"127.0.0.1:{port}"]

    error = failure(f"http://127.0.0.1:{port}/ok", timeout=2)

    assert "failed" in str(error)
    assert error.error_type == "HttpError"


# --- response size ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/big-declared", id="content-length-over-the-limit"),
        pytest.param("/big-unannounced", id="no-content-length"),
        pytest.param("/big-chunked", id="chunked"),
    ],
)
def test_an_answer_over_the_limit_fails_without_being_read(
    servers: tuple[Server, Server], path: str
) -> None:
    allowed, _ = servers
    started = time.monotonic()

    error = failure(f"{allowed.base}{path}", timeout=20)

    assert "larger than 1000 bytes" in str(error)
    assert error.error_type == "HttpError"
    assert time.monotonic() - started < 10
    deadline = time.monotonic() + 10
    while path not in allowed.sent and time.monotonic() < deadline:
        time.sleep(0.05)
    # The client hung up after at most limit + 1 bytes: the server got no further than what
    # the sockets' buffers hold, a small part of the 256 MiB it meant to send.
    assert allowed.sent[path] < ENDLESS_BYTES // 8


def test_an_answer_nested_too_deeply_fails_cleanly(
    servers: tuple[Server, Server], settings: Any
) -> None:
    allowed, _ = servers
    settings.FLOWPLATFORM_HTTP_MAX_RESPONSE_BYTES = 1024 * 1024

    error = failure(f"{allowed.base}/deep")

    assert "nested deeper than 64 levels" in str(error)


# --- the allow-list: exact host, and port when the entry has one ---------------------------

TRICKS = [
    pytest.param("http://example.com.evil.net/", id="suffix"),
    pytest.param("http://evil.net/example.com", id="host-in-path"),
    pytest.param("http://evil.net/?example.com", id="host-in-query"),
    pytest.param("http://example.com@evil.net/", id="allowed-host-as-user"),
    pytest.param("http://evil.net@example.com/", id="user-info"),
    pytest.param("http://user:pw@example.com/", id="credentials"),
    pytest.param("http://evil.net#@example.com/", id="fragment-at"),
    pytest.param("http://evil.net\\@example.com/", id="backslash-at"),
    pytest.param("http://evil.net\\.example.com/", id="backslash"),
    pytest.param("http://example.com\t.evil.net/", id="tab"),
    pytest.param("http://exa\nmple.com/", id="newline"),
    pytest.param("http://example.com /", id="space"),
    pytest.param("http://example.com./", id="trailing-dot"),
    pytest.param("http://sub.example.com/", id="subdomain"),
    pytest.param("http://example%2Ecom/", id="percent-encoded"),
    pytest.param("http://hooks.example.com/", id="port-required-default"),
    pytest.param("http://hooks.example.com:8080/", id="port-required-other"),
    pytest.param("ftp://example.com/", id="ftp"),
    pytest.param("file://example.com/etc/passwd", id="file"),
    pytest.param("gopher://example.com/", id="gopher"),
    pytest.param("//example.com/", id="scheme-relative"),
    pytest.param("example.com/", id="no-scheme"),
    pytest.param("http://[::1/", id="broken-ipv6"),
    pytest.param("http://127.0.0.1/", id="ip-not-listed"),
]
ALLOWED = [
    pytest.param("http://example.com/", id="host"),
    pytest.param("https://EXAMPLE.com/hook", id="host-any-case"),
    pytest.param("http://example.com:8080/hook?a=1", id="host-any-port"),
    pytest.param("https://hooks.example.com:8443/", id="host-and-port"),
    pytest.param("http://[::1]:9000/", id="ipv6"),
]


@pytest.fixture
def example_hosts(settings: Any) -> None:
    settings.FLOWPLATFORM_HTTP_ALLOWED_HOSTS = ["example.com", "hooks.example.com:8443", "[::1]"]


@pytest.mark.parametrize("url", TRICKS)
def test_urls_that_do_not_name_an_allowed_host_exactly_are_refused_at_save_time(
    example_hosts: None, url: str
) -> None:
    problems = HttpExecutor().check_config({"url": url})

    assert [key for key, _ in problems] == ["url"]


@pytest.mark.parametrize("url", TRICKS)
def test_urls_that_do_not_name_an_allowed_host_exactly_are_refused_at_run_time(
    example_hosts: None, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a definition stored before the rules or settings changed connects nowhere."""
    connections: list[Any] = []
    monkeypatch.setattr("socket.create_connection", lambda *a, **k: connections.append(a))

    error = failure(url)

    assert error.error_type == "NotAllowed"
    assert connections == []


@pytest.mark.parametrize("url", ALLOWED)
def test_urls_naming_an_allowed_host_are_accepted(example_hosts: None, url: str) -> None:
    assert HttpExecutor().check_config({"url": url}) == []


def test_a_url_trick_cannot_reach_a_host_off_the_list(servers: tuple[Server, Server]) -> None:
    allowed, other = servers
    tricks = [
        f"http://127.0.0.1:{allowed.port}@127.0.0.1:{other.port}/ok",
        f"http://127.0.0.1:{other.port}\\@127.0.0.1:{allowed.port}/ok",
        f"http://127.0.0.1:{other.port}#@127.0.0.1:{allowed.port}/ok",
        f"http://127.0.0.1:{other.port}/ok",  # the right host on another port
    ]

    for url in tricks:
        assert failure(url).error_type == "NotAllowed", url

    assert other.hits == []
    assert allowed.hits == []


def test_an_http_task_saved_through_the_api_with_a_trick_url_is_a_422(
    tenant: Tenant, example_hosts: None
) -> None:
    definition = yaml.safe_dump(
        {
            "tasks": [
                {"name": "call", "type": "http", "config": {"url": "http://evil.net@example.com/"}}
            ]
        }
    )

    response = tenant.client.post("/flows", {"name": "f", "definition": definition}, format="json")

    assert response.status_code == 422
    locs = [item["loc"] for item in response.json()["detail"]]
    assert ["body", "definition", "tasks", 0, "config", "url"] in locs
    assert not Flow.objects.exists()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Host": "evil.net"}, id="host"),
        pytest.param({"content-length": "0"}, id="content-length"),
        pytest.param({"Transfer-Encoding": "chunked"}, id="transfer-encoding"),
        pytest.param({"X-Ok": "a\r\nHost: evil.net"}, id="header-injection"),
        pytest.param({"Bad Name": "x"}, id="bad-name"),
    ],
)
def test_headers_that_would_reroute_or_reframe_the_request_are_refused(
    servers: tuple[Server, Server], headers: dict[str, str]
) -> None:
    allowed, _ = servers
    url = f"{allowed.base}/ok"

    assert [key for key, _ in HttpExecutor().check_config({"url": url, "headers": headers})] == [
        "headers"
    ]
    assert failure(url, headers=headers).error_type == "NotAllowed"
    assert allowed.hits == []


# --- python callables ------------------------------------------------------------------------


def test_a_python_callable_is_refused_at_run_time_once_its_module_is_no_longer_allowed(
    settings: Any,
) -> None:
    config = {"callable": "examples.tasks:word_lengths"}
    assert PythonExecutor().check_config(config) == []
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["tests"]

    with pytest.raises(TaskFailed) as caught:
        PythonExecutor().run({"words": ["a"]}, config)

    assert caught.value.error_type == "NotAllowed"


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("examples_evil.tasks:run", id="prefix-lookalike"),
        pytest.param("os:system", id="stdlib"),
        pytest.param("builtins:eval", id="builtin"),
        pytest.param("examples.tasks:ExecutorResult", id="imported-from-elsewhere"),
        pytest.param("examples.tasks:Any", id="imported-name"),
    ],
)
def test_a_python_callable_outside_the_allowed_modules_never_runs(settings: Any, path: str) -> None:
    settings.FLOWPLATFORM_PYTHON_CALLABLES = ["examples"]

    assert [key for key, _ in PythonExecutor().check_config({"callable": path})] == ["callable"]
    with pytest.raises(TaskFailed) as caught:
        PythonExecutor().run({}, {"callable": path})
    assert caught.value.error_type == "NotAllowed"


# --- through the engine ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_http_task_that_times_out_records_a_failed_attempt(
    tenant: Tenant, servers: tuple[Server, Server]
) -> None:
    allowed, _ = servers
    config = {"url": f"{allowed.base}/silent", "timeout": 0.5}
    definition = yaml.safe_dump({"tasks": [{"name": "call", "type": "http", "config": config}]})
    flow = tenant.client.post("/flows", {"name": "f", "definition": definition}, format="json")
    assert flow.status_code == 201, flow.content

    response = tenant.client.post("/flow-executions", {"flow_id": flow.json()["id"]}, format="json")

    assert response.status_code == 201
    attempt = TaskExecution.objects.get(flow_execution_id=response.json()["id"])
    assert attempt.status == "failed"
    assert attempt.error == {
        "type": "HttpError",
        "message": f"POST {allowed.base}/silent did not finish within 0.5 s",
    }
