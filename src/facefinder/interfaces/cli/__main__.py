"""`python -m facefinder.interfaces.cli`: the same CLI as the `facefinder` script."""

import sys

from facefinder.interfaces.cli import app

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
