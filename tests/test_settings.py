"""Settings come from the environment; a bad value stops start-up naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def start(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Import the settings in a fresh interpreter, as a process start-up does."""
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DEBUG"}}
    clean["FLOWPLATFORM_VAR_DIR"] = "/tmp/flowplatform-settings-test"
    return subprocess.run(
        [sys.executable, "-c", "import django, os; "
         "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'flowplatform.settings'); "
         "django.setup(); from django.conf import settings; "
         "print(settings.DATABASES['default']['ENGINE'], settings.DEBUG, "
         "settings.TASKS['default']['BACKEND'])"],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_defaults_are_the_embedded_mode():
    result = start({})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "True",
        "flowplatform.tasks.InlineQueueBackend",
    ]


def test_postgres_url_and_database_tasks_backend():
    result = start(
        {"DATABASE_URL": "postgres://u:p@db.example:5432/app", "TASKS_BACKEND": "database"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "True",
        "django_tasks_db.DatabaseBackend",
    ]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL"),
        ({"DATABASE_URL": "nonsense"}, "DATABASE_URL"),
        ({"TASKS_BACKEND": "celery"}, "TASKS_BACKEND"),
        ({"API_PAGE_SIZE": "lots"}, "API_PAGE_SIZE"),
        ({"DEBUG": "false", "ALLOWED_HOSTS": "api.example.com"}, "SECRET_KEY"),
        ({"DEBUG": "false", "SECRET_KEY": "s" * 50}, "ALLOWED_HOSTS"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"MAX_JSON_DEPTH": "100000"}, "MAX_JSON_DEPTH"),
        ({"MAX_JSON_DEPTH": "deep"}, "MAX_JSON_DEPTH"),
        ({"FLOWPLATFORM_HTTP_TIMEOUT_SECONDS": "0"}, "FLOWPLATFORM_HTTP_TIMEOUT_SECONDS"),
        ({"FLOWPLATFORM_HTTP_TIMEOUT_SECONDS": "61"}, "FLOWPLATFORM_HTTP_TIMEOUT_SECONDS"),
        ({"FLOWPLATFORM_LEASE_SECONDS": "0.5"}, "FLOWPLATFORM_LEASE_SECONDS"),
        ({"FLOWPLATFORM_LEASE_SECONDS": "nan"}, "FLOWPLATFORM_LEASE_SECONDS"),
        ({"FLOWPLATFORM_REAP_INTERVAL_SECONDS": "soon"}, "FLOWPLATFORM_REAP_INTERVAL_SECONDS"),
        ({"FLOWPLATFORM_WORKER_SHUTDOWN_SECONDS": "inf"}, "FLOWPLATFORM_WORKER_SHUTDOWN_SECONDS"),
        ({"FLOWPLATFORM_WORKER_SHUTDOWN_SECONDS": "-1"}, "FLOWPLATFORM_WORKER_SHUTDOWN_SECONDS"),
    ],
)
def test_invalid_value_fails_start_up_naming_the_variable(env, variable):
    result = start(env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert variable in last_line


def test_production_settings_start_with_required_values():
    result = start({"DEBUG": "false", "SECRET_KEY": "s" * 50, "ALLOWED_HOSTS": "api.example.com"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == "False"
