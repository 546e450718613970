"""One text form per JSON value, so values compare and hash the same wherever they come from.

Python's `==` says `True == 1` and `1 == 1.0`; inputs and outputs are JSON, where those are
different values. Comparing their canonical texts keeps them apart.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def same_json(a: Any, b: Any) -> bool:
    return canonical_json(a) == canonical_json(b)


def fingerprint(value: Any) -> str:
    """SHA-256 (hex) of the canonical text of a JSON-able value."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()
