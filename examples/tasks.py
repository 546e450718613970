"""Callables for the example flows. A callable takes the task's resolved input and returns
its output, or an ExecutorResult to give its own summary."""

from __future__ import annotations

from typing import Any

from executions.executors import ExecutorResult


def extract(input: dict[str, Any]) -> ExecutorResult:
    """Pretend to read a document: its text is the input, pages are blocks of 40 words."""
    text = str(input.get("document", ""))
    words = text.split()
    pages = max(1, -(-len(words) // 40))
    output = {"pages": pages, "words": len(words), "title": " ".join(words[:6])}
    return ExecutorResult(output, summary={"pages": pages, "word_count": len(words)})


def word_lengths(input: dict[str, Any]) -> list[int]:
    return [len(word) for word in str(input.get("text", "")).split()]


def total(input: dict[str, Any]) -> ExecutorResult:
    values = [int(value) for value in input.get("values", [])]
    return ExecutorResult(
        {"total": sum(values), "count": len(values)}, summary={"total": sum(values)}
    )
