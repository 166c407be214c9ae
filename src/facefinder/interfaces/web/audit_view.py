"""How the web pages show an audit entry's details: labelled, readable lines instead of raw key=value
JSON, because an auditor reads them, not a program. A search's entries link to its record (and the
record lists its entries: pages.py), a case to its searches; candidate lists read as faces and scores;
long hashes are shortened with the whole value kept as a tooltip. The JSON export keeps every value as
stored: this is a view only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

SHOWN_CANDIDATES = 5  # of a search's candidates, the first few are named and the rest counted
LABELS = {
    "search_id": "search",
    "face_id": "face",
    "image_id": "image",
    "probe_sha256": "probe sha256",
    "top_k": "top K",
    "near_misses": "near misses",
    "previous_status": "was",
    "proposed_by": "proposed by",
}


@dataclass(frozen=True)
class Detail:
    """One line of an entry's details: its label, the value in words, a link, and the full value when shortened."""

    label: str
    text: str
    href: str | None = None
    title: str | None = None
    note: bool = False  # free text a person wrote (a lead note): shown as written


def readable(entry: dict[str, Any]) -> list[Detail]:
    """The details of an audit entry (``as_dict`` of services/audit.py) as lines for people."""
    return [_detail(key, value) for key, value in entry["details"].items()]


def _detail(key: str, value: Any) -> Detail:
    label = LABELS.get(key, key.replace("_", " "))
    if key == "search_id" and isinstance(value, int):
        return Detail(label, f"#{value}", href=f"/searches/{value}")
    if key == "case_id" and isinstance(value, str):
        return Detail("case", value, href=f"/searches?case_id={quote(value)}")
    if key == "candidates" and isinstance(value, list):
        return Detail(label, _candidates(value))
    if key in ("note", "reason") and isinstance(value, str):
        return Detail(label, value or "(none)", note=True)
    if isinstance(value, str) and len(value) > 40 and " " not in value:  # a hash or token digest
        return Detail(label, value[:16] + "…", title=value)
    return Detail(label, _words(value))


def _candidates(pairs: list) -> str:
    """``[[face_id, score], ...]`` as "3 candidates: face 12 (0.785), face 39 (0.666), face 40 (0.658)"."""
    if not pairs:
        return "none"
    named = ", ".join(_candidate(pair) for pair in pairs[:SHOWN_CANDIDATES])
    more = f", and {len(pairs) - SHOWN_CANDIDATES} more" if len(pairs) > SHOWN_CANDIDATES else ""
    return f"{len(pairs)} candidate{'s' if len(pairs) != 1 else ''}: {named}{more}"


def _candidate(pair: Any) -> str:
    if isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[1], (int, float)):
        return f"face {pair[0]} ({pair[1]:.3f})"
    return _words(pair)


def _words(value: Any) -> str:
    """Any other value in plain words: yes/no, lists joined, mappings as "key: value"."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_words(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{k.replace('_', ' ')}: {_words(v)}" for k, v in value.items()) if value else "none"
    return str(value)
