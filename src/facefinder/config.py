"""Where facefinder keeps its data, and the few settings that are not per-call arguments."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "FACEFINDER_DATA_DIR"
MODELS_DIR_ENV = "FACEFINDER_MODELS_DIR"
DEVICE_ENV = "FACEFINDER_DEVICE"  # where the models run: cpu (default) or cuda; inherited by ingest workers
RUNTIME_ENV = "FACEFINDER_RUNTIME"  # what runs the shipped models on the CPU: litert (default) or onnxruntime


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: the argument, else ``$FACEFINDER_DATA_DIR``, else ``~/.facefinder``."""
    chosen = explicit or os.environ.get(DATA_DIR_ENV) or Path.home() / ".facefinder"
    return Path(chosen).expanduser().resolve()


def models_dir(data: Path | None = None) -> Path:
    """Where converted ONNX models are cached: ``$FACEFINDER_MODELS_DIR``, else ``<data dir>/models``.

    Kept overridable so that several data directories (tests, benchmarks) share one model cache.
    """
    explicit = os.environ.get(MODELS_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    return (data or data_dir()) / "models"
