"""The command line `facefinder`: the app (main.py), one module per command group, and what they share (common.py)."""

from facefinder.interfaces.cli.main import app

__all__ = ["app"]
