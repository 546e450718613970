"""A callable for tests that cut a worker's database at a chosen moment: `handshake` tells the
test it has done its work (a file `returning` in `input["dir"]`) and waits for the test's go
(a file `go`) before it returns, so the test can cut the connection exactly between the executor
returning and the worker recording its outcome. Each run is counted in the file `runs`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def handshake(input: dict[str, Any]) -> dict[str, Any]:
    directory = Path(input["dir"])
    fd = os.open(directory / "runs", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"ran\n")
    finally:
        os.close(fd)
    (directory / "returning").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while not (directory / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.02)
    return {"value": input["value"], "pid": os.getpid()}
