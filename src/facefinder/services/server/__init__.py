"""The server's own services: accounts and grants, cases, ingest jobs, uploaded photos."""
