"""The admin's case-search settings (services/server/cases.py reads them for every search and probe).

They live in the catalog's settings table, so that every server process sharing the catalog applies
the same ones: the purpose categories a search must be filed under (so that each search names a reason
the organisation recognises), and how many days an uploaded probe photo is kept (0 by default: only its
sha256 and the searched face's thumbnail are).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from facefinder.errors import FieldError

if TYPE_CHECKING:
    from facefinder.storage.catalog import Catalog

DEFAULT_CATEGORIES = [
    "criminal investigation",
    "missing person",
    "victim identification",
    "fraud investigation",
    "internal test or audit",
]
CATEGORIES_KEY = "search_categories"
RETENTION_KEY = "probe_retention_days"


@dataclass
class CaseSettings:
    """The admin's search settings: the purpose categories offered, and how long probe photos are kept."""

    categories: list[str]
    probe_retention_days: int

    @classmethod
    def load(cls, catalog: Catalog) -> CaseSettings:
        """The stored settings; the defaults stand for those no admin has set."""
        categories = json.loads(catalog.get_setting(CATEGORIES_KEY, json.dumps(DEFAULT_CATEGORIES)))
        days = int(catalog.get_setting(RETENTION_KEY, "0"))
        return cls(categories, days)


def setting_changes(categories: list[str] | None, probe_retention_days: int | None) -> dict[str, Any]:
    """The settings to store, keyed as the catalog keeps them; checked first, so that a bad value
    changes nothing. ``None`` leaves that setting as it is."""
    changes: dict[str, Any] = {}
    if categories is not None:
        cleaned = [c.strip() for c in categories if c and c.strip()]
        if not cleaned:
            raise FieldError("categories", "at least one category is needed")
        if any(len(c) > 100 for c in cleaned):
            raise FieldError("categories", "a category has at most 100 characters")
        changes[CATEGORIES_KEY] = list(dict.fromkeys(cleaned))
    if probe_retention_days is not None:
        if not 0 <= probe_retention_days <= 3650:
            raise FieldError("probe_retention_days", "must be between 0 and 3650")
        changes[RETENTION_KEY] = str(probe_retention_days)
    return changes


def save_settings(catalog: Catalog, changes: dict[str, Any]) -> None:
    """Store checked changes in one transaction: all of them or none."""
    with catalog.session() as session, session.begin():
        for key, value in changes.items():
            catalog.set_setting(session, key, value)
