"""`manage.py` as an operator runs it: a real subprocess (system checks on, which
`call_command` skips) on a throwaway SQLite database, failing on a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def manage(
    database: Path, *args: str, status: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `manage.py ARGS` on the SQLite file `database`; its exit status must be `status`.
    Settings come from `env` alone (none of the caller's DATABASE_/FLOWPLATFORM_ variables)."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "FLOWPLATFORM_"))
    }
    clean |= {
        "DATABASE_URL": f"sqlite:///{database}",
        "FLOWPLATFORM_VAR_DIR": str(database.parent),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    result = subprocess.run(  # noqa: S603 - our own manage.py, with our own arguments
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    shown = f"manage.py {' '.join(args)}\n{result.stdout}\n{result.stderr}"
    assert result.returncode == status, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    return result
