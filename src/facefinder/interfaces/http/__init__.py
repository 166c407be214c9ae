"""The HTTP service: the JSON API and the web UI in one FastAPI app (``app.create_app``)."""
