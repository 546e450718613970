"""README's production start, run as written: the env file from deploy/, `migrate` as the tables'
owner, `collectstatic`, gunicorn with the shipped gunicorn.conf.py, on a database of its own.
The server must answer /readyz as the application's role and serve a collected static file."""

from __future__ import annotations

import http.client
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from tests.helpers.database import APP_ROLE, database_address

pytestmark = pytest.mark.postgresql
ROOT = Path(__file__).resolve().parent.parent


def recipe() -> str:
    """The shell block README marks as the production recipe."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- production-recipe[^>]*-->\n```sh\n(.*?)```", text, re.DOTALL)
    assert match, "README's production recipe block is missing"
    return match[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def database(django_db_setup: None) -> Iterator[dict[str, str]]:
    """A fresh database on the configured server, owned by the tests' user."""
    db = connection.settings_dict
    host, port = database_address()
    server = {
        "host": host,
        "port": str(port),
        "user": db["USER"],
        "password": db["PASSWORD"] or "",
    }
    name = f"flowplatform_recipe_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(dbname=db["NAME"], autocommit=True, **server)
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.errors.InsufficientPrivilege:
        admin.close()
        pytest.skip(f"{server['user']} may not create databases on {server['host']}")
    try:
        yield {**server, "name": name}
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def url(database: dict[str, str], user: str) -> str:
    password = f":{database['password']}" if database["password"] and user != APP_ROLE else ""
    return f"postgres://{user}{password}@{database['host']}:{database['port']}/{database['name']}"


def env_file(path: Path, database: dict[str, str], static: Path, port: int) -> None:
    """deploy/flowplatform.env.example with every CHANGE filled in, as the operator does."""
    values = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": url(database, APP_ROLE),
        "MIGRATE_DATABASE_URL": url(database, database["user"]),
        "STATIC_ROOT": str(static),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
    }
    lines = []
    for line in (ROOT / "deploy" / "flowplatform.env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={values[name]}" if name in values and "=" in line else line)
    text = "\n".join(lines) + "\n"
    assert "CHANGE" not in "".join(line for line in lines if not line.startswith("#"))
    path.write_text(text)


def get(port: int, path: str) -> tuple[int, bytes]:
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        client.request("GET", path)
        response = client.getresponse()
        return response.status, response.read()
    finally:
        client.close()


def raw_status(port: int, request: str) -> int:
    """The status line's code of the answer to `request`, sent as raw bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_the_production_recipe_serves_the_api_and_its_static_files(
    database: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    settings_file = tmp_path / "flowplatform.env"
    env_file(settings_file, database, tmp_path / "static", port)
    script = recipe().replace("./flowplatform.env", str(settings_file))
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "DJANGO_", "TASKS_", "FLOWPLATFORM_", "STATIC_"))
    }
    log = tmp_path / "recipe.log"
    with log.open("w") as output:
        server = subprocess.Popen(  # noqa: S603 - README's own commands
            ["bash", "-euc", script],  # noqa: S607
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status, body = get(port, "/readyz")
                break
            except OSError:
                time.sleep(0.2)
        assert status == 200, log.read_text()[-4000:]
        assert (tmp_path / "static" / "admin" / "css" / "base.css").exists(), "not collected"
        status, body = get(port, "/static/admin/css/base.css")
        assert status == 200
        assert b"body" in body
        status, _ = get(port, "/flow-executions")
        assert status == 401  # the API is there, and wants a key
        # What gunicorn refuses itself, as README documents: a request line over 8,190 bytes,
        # a header over 8,190 bytes.
        assert raw_status(port, f"GET /flows?name={'x' * 8200} HTTP/1.1\r\nHost: a\r\n\r\n") == 414
        long_header = f"GET /flows HTTP/1.1\r\nHost: a\r\nX-Big: {'x' * 8200}\r\n\r\n"
        assert raw_status(port, long_header) == 431
        text = log.read_text()
        assert re.search(r'"GET /readyz HTTP/1.1" 200 .* request_id=[0-9a-f-]{32,36}', text), text
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-4000:]


def test_migrate_naming_an_application_role_that_does_not_exist_says_so(
    database: dict[str, str],
) -> None:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "DJANGO_", "TASKS_", "FLOWPLATFORM_"))
    }
    environment |= {
        "DATABASE_URL": url(database, database["user"]),
        "DATABASE_APP_ROLE": "no_such_role_for_flowplatform",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] + "\n" == (
        "error: DATABASE_APP_ROLE='no_such_role_for_flowplatform': there is no such role; create "
        "it first (README, 'Tenant isolation in the database'), or leave DATABASE_APP_ROLE empty\n"
    )
