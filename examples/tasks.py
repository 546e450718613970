"""Callables for the example flows. A callable takes the task's resolved input and returns
its output (or an ExecutorResult to give its own summary); a summary function (a python task's
`config.summary`) takes an output and returns its summary, also for a person's corrected
output."""

from __future__ import annotations

from typing import Any

from executions.executors import ExecutorResult


def extract(input: dict[str, Any]) -> dict[str, Any]:
    """Pretend to read a document: its text is the input, pages are blocks of 40 words."""
    text = str(input.get("document", ""))
    words = text.split()
    pages = max(1, -(-len(words) // 40))
    return {"pages": pages, "words": len(words), "title": " ".join(words[:6])}


def extract_summary(output: Any) -> dict[str, Any]:
    """What extract's output shows in the flow execution's summary."""
    output = output if isinstance(output, dict) else {}
    return {"pages": output.get("pages"), "word_count": output.get("words")}


def word_lengths(input: dict[str, Any]) -> list[int]:
    return [len(word) for word in str(input.get("text", "")).split()]


def total(input: dict[str, Any]) -> ExecutorResult:
    values = [int(value) for value in input.get("values", [])]
    return ExecutorResult(
        {"total": sum(values), "count": len(values)}, summary={"total": sum(values)}
    )


def split(input: dict[str, Any]) -> dict[str, Any]:
    """A document as its list of pages (examples/document-pages.yaml): `pages` is a list of page
    texts, or `text` holds them separated by form feeds (\\f)."""
    document = input.get("document")
    document = document if isinstance(document, dict) else {"text": str(document or "")}
    pages = document.get("pages")
    if not isinstance(pages, list):
        pages = str(document.get("text", "")).split("\f")
    return {"title": str(document.get("title", "")), "pages": [str(page) for page in pages]}


def extract_page(input: dict[str, Any]) -> dict[str, Any]:
    """One page of a split document: its number (the for_each item's index), its word count
    and its text."""
    text = str(input.get("text", "")).strip()
    return {"page": input.get("page"), "words": len(text.split()), "text": text}
