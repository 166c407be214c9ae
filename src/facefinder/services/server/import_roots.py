"""Import roots: the server folders that server-side ingests may read from, and who may use which.

A grant on one collection says nothing about the photos of another, so a server folder is never
open to every user who may ingest somewhere:

* an unbound root (``--import-root DIR``) is for admins only: it may hold the sources of any
  collection;
* a bound root (``--import-root-for COLLECTION=DIR``) is one collection's folder: whoever may ingest
  into that collection (admins, and investigators granted it) may ingest from it, into that
  collection only. The same folder may be bound to several collections (it is then theirs alike),
  but folders bound to different collections may not lie one inside the other: the walk of the
  outer one would reach the inner one's photos.

A requested path resolves (links followed) inside a root the user may use for that collection, and
the job is then confined to that root: no file it reads may lead out of it, however it is linked
(``confine_to``, services/sources/folders.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from facefinder.errors import FaceFinderError, FieldError
from facefinder.services.server.accounts import AccessDenied, Principal


class ImportForbidden(AccessDenied):
    """A server-side path this user may not ingest from into this collection (HTTP 403 on ``path``)."""

    field = "path"

    def __init__(self, message: str) -> None:
        super().__init__(f"path: {message}")


@dataclass(frozen=True)
class ImportTarget:
    """A checked server-side source: the real path, and the root its job must not lead out of."""

    path: Path
    root: Path


class ImportRoots:
    """The server's import roots, unbound (admins) and bound to collections; see the module docstring."""

    def __init__(
        self, admin_roots: Iterable[str | Path] = (), bound: Mapping[str, Iterable[str | Path]] | None = None
    ) -> None:
        """Roots are resolved once (links followed). Raises FaceFinderError when folders bound to
        different collections lie one inside the other."""
        self.admin = _unique(Path(r).expanduser().resolve() for r in admin_roots)
        self.bound = {
            name: _unique(Path(r).expanduser().resolve() for r in roots) for name, roots in (bound or {}).items()
        }
        _check_overlaps(self.bound)

    def __bool__(self) -> bool:
        return bool(self.admin) or any(self.bound.values())

    def usable(self, principal: Principal, collection: str) -> list[Path]:
        """The roots ``principal`` may ingest from into ``collection``: its bound roots first, then,
        for an admin, the unbound ones. (Whether they may ingest into it at all is their grant.)"""
        roots = list(self.bound.get(collection, []))
        if principal.role == "admin":
            roots += [r for r in self.admin if r not in roots]
        return roots

    def resolve(self, principal: Principal, collection: str, raw: str) -> ImportTarget:
        """``raw`` (absolute, or relative to the first usable root) as a real path inside a root
        ``principal`` may use for ``collection``. ImportForbidden (403) when they may use none or
        it lies in a root that is not theirs for it; FieldError (400) when it is outside every root
        or missing."""
        if not self:
            raise ImportForbidden(
                "server-side imports are off: start the server with --import-root DIR, or upload an archive"
            )
        if "\x00" in raw:
            raise FieldError("path", "invalid path")
        roots = self.usable(principal, collection)
        if not roots and principal.role == "admin":
            raise ImportForbidden(
                f"no import root serves collection {collection!r} (the bound ones serve their own collections): "
                f"start the server with --import-root DIR or --import-root-for {collection}=DIR, or upload an archive"
            )
        if not roots:
            raise ImportForbidden(
                f"no server folder is bound to collection {collection!r}, and unbound import roots are for "
                f"admins: upload an archive, or ask an admin to start the server with "
                f"--import-root-for {collection}=DIR"
            )
        candidate = Path(raw).expanduser()
        resolved = (candidate if candidate.is_absolute() else roots[0] / candidate).resolve()
        root = _holder(resolved, roots)
        foreign = [r for name, bound in self.bound.items() if name != collection for r in bound if r not in roots]
        if (
            root is not None and _holder(resolved, foreign) is not None
        ):  # another collection's folder, inside an admin root
            root = None
        if root is None and _holder(resolved, self._all()) is not None:
            raise ImportForbidden(
                f"this folder is not open to you for collection {collection!r}; its import roots: {_listed(roots)}"
            )
        if root is None:
            raise FieldError("path", f"must be inside an import root ({_listed(roots)})")
        try:
            exists = resolved.exists()
        except OSError:  # a folder on the way that the server may not read
            exists = False
        if not exists:
            raise FieldError("path", "no such file or folder inside the import roots")
        return ImportTarget(resolved, root)

    @property
    def folders(self) -> list[Path]:
        """Every import root, bound or not: folders users can have the server read, so whatever was
        ingested from them is read back only through a fence (sources/folders.py ``read_source``)."""
        return self._all()

    def _all(self) -> list[Path]:
        return self.admin + [r for roots in self.bound.values() for r in roots]


def _holder(path: Path, roots: list[Path]) -> Path | None:
    """The first of ``roots`` that ``path`` is, or lies in."""
    return next((r for r in roots if path == r or path.is_relative_to(r)), None)


def _listed(roots: list[Path]) -> str:
    return ", ".join(map(str, roots))


def _unique(paths: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


def _check_overlaps(bound: Mapping[str, list[Path]]) -> None:
    """Refuse folders of different collections that lie one inside the other (the same folder is shared)."""
    pairs = [(name, root) for name, roots in bound.items() for root in roots]
    for i, (name, root) in enumerate(pairs):
        for other_name, other in pairs[i + 1 :]:
            if name != other_name and root != other and (root.is_relative_to(other) or other.is_relative_to(root)):
                raise FaceFinderError(
                    f"import-root-for: {root} ({name}) and {other} ({other_name}) lie one inside the other; "
                    "bind separate folders to separate collections"
                )
