"""The accounts and the audit log on a catalog alone (no vector index, no models): what the `users` and
`audit` commands need, opened here so that no interface opens the catalog itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from facefinder.services.audit import AuditLog
from facefinder.services.server.accounts import Accounts
from facefinder.storage.catalog import Catalog


@contextmanager
def audit_log_on(url: str) -> Iterator[AuditLog]:
    """The audit log of the catalog at ``url`` (an SQLAlchemy URL), closed when the block ends."""
    catalog = Catalog(url)
    try:
        yield AuditLog(catalog)
    finally:
        catalog.close()


@contextmanager
def accounts_on(url: str) -> Iterator[Accounts]:
    """The accounts of the catalog at ``url``, auditing to its log, closed when the block ends."""
    with audit_log_on(url) as audit:
        yield Accounts(audit.catalog, audit)
