"""The catalog (SQL) and the vector index. Importing the package registers every catalog table, whichever
module defines it, so ``Catalog`` creates them all."""

from facefinder.storage import accounts, cases, catalog, people, privacy, video  # noqa: F401
