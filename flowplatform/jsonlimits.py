"""How deeply JSON text nests, measured without parsing it (so without recursion).

Python's json module recurses once per level: a request body of 100,000 `[` would exhaust the
stack before any validation ran. Request bodies (flowplatform.api.parsers) and the answers of
`http` tasks (executions.executors) are measured here first and refused when too deep.
"""

from __future__ import annotations

import re
from itertools import accumulate

# Each pattern matches fixed-size pieces or runs without backtracking, so all of it is linear.
_ESCAPE = re.compile(r"\\.", re.DOTALL)  # \" must not end a string; \\ must not escape it
_STRING = re.compile(r'"[^"]*"')  # once escapes are gone, a string is the text between quotes
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (0 for a scalar, 1 for `[]`).

    Brackets inside strings do not count. Text that is not JSON gets some number; the JSON
    parser that runs afterwards rejects it.
    """
    brackets = _NOT_A_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", text)))
    return max(accumulate(map(_STEP.__getitem__, brackets), initial=0))


def too_deep(text: str, max_depth: int) -> bool:
    # Cheap first: text with few brackets cannot nest deeply.
    if text.count("[") + text.count("{") <= max_depth:
        return False
    return nesting_depth(text) > max_depth
