"""The one inference base every model goes through: a runtime session plus tensor plumbing.

Subclasses describe only what differs between models (pre-processing and decoding); the base
hides which runtime runs the file, NCHW vs NHWC layouts and models whose batch dimension is fixed.
Two runtimes: onnxruntime for ONNX files (a user's models, and every model on a GPU), and LiteRT
for the shipped models' .tflite files on the CPU, where its XNNPACK kernels run the pipeline 1.5x
faster than onnxruntime runs their ONNX conversions, with the same outputs (benchmarks/runtimes.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from facefinder.config import DEVICE_ENV, RUNTIME_ENV
from facefinder.errors import ModelError

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]  # H x W x 3, RGB
DEVICES = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
RUNTIMES = ("litert", "onnxruntime")


def device_name(device: str | None = None) -> str:
    """``device``, else $FACEFINDER_DEVICE, else cpu; checked. An environment variable rather than an
    argument, so that ingest's worker processes inherit it."""
    name = (device or os.environ.get(DEVICE_ENV) or "cpu").strip().lower()
    if name not in DEVICES:
        raise ModelError(f"{DEVICE_ENV} (--device): one of {', '.join(DEVICES)}, not {name!r}")
    return name


def providers(device: str | None = None) -> list[str]:
    """The ONNX Runtime providers for ``device``. ``cuda`` needs the GPU build of onnxruntime; asked
    for without it, it is an error, never a silent fall back to the CPU."""
    name = device_name(device)
    if name == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ModelError(
            "--device cuda: this onnxruntime has no CUDA provider; install the GPU build "
            "(pip uninstall onnxruntime; pip install 'facefinder[gpu]') on a machine with an NVIDIA driver"
        )
    return DEVICES[name]


def litert_installed() -> bool:
    """Whether the ai-edge-litert package is installed (it has no Windows build)."""
    return importlib.util.find_spec("ai_edge_litert") is not None


def litert_available() -> bool:
    """Whether the shipped models run on LiteRT: on the CPU, where it is installed, unless
    $FACEFINDER_RUNTIME says onnxruntime."""
    asked = (os.environ.get(RUNTIME_ENV) or "").strip().lower()
    if asked and asked not in RUNTIMES:
        raise ModelError(f"{RUNTIME_ENV}: one of {', '.join(RUNTIMES)}, not {asked!r}")
    if asked == "onnxruntime":
        return False
    if asked == "litert" and device_name() != "cpu":
        raise ModelError(f"{RUNTIME_ENV}=litert runs on the CPU only; on a GPU the models run on onnxruntime")
    if asked == "litert" and not litert_installed():
        raise ModelError(f"{RUNTIME_ENV}=litert: the ai-edge-litert package is not installed (it has no Windows build)")
    return device_name() == "cpu" and litert_installed()


class Session(Protocol):
    """One model file opened by a runtime: what InferenceModel needs of it."""

    input_name: str
    input_shape: list[int | None]  # as the file declares it; None for a free dimension
    output_names: list[str]
    output_shapes: list[list[int | None]]
    providers: list[str]

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


class OrtSession:
    """An onnxruntime session: any ONNX file, on the CPU or a CUDA GPU. Safe to run from many threads."""

    def __init__(self, path: Path, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if threads > 1:  # idle threads spinning steal the cores FAISS and other workers need
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chosen = providers()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelError(f"{path}: not a loadable ONNX model ({exc})") from exc
        self.providers = self.session.get_providers()
        if chosen[0] not in self.providers:  # the GPU build without a working CUDA: it falls back
            raise ModelError(f"{path}: {chosen[0]} did not load (is the NVIDIA driver, CUDA and cuDNN installed?)")
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_shape = [d if isinstance(d, int) else None for d in model_input.shape]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_shapes = [[d if isinstance(d, int) else None for d in o.shape] for o in self.session.get_outputs()]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: batch})


class LiteSession:
    """LiteRT interpreters for one .tflite file (the shipped models). An interpreter is not thread-safe
    and is sized for one batch, so each run borrows one of the right size from a pool (video frames and
    web searches run in threads). A file whose batch the model manager freed runs any batch; another
    runs its own batch size only."""

    LARGEST_BATCH = 8  # a free batch is split into runs of 8, 4, 2 and 1: at most four sizes per pool

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path, self.threads, self._interpreter = path, threads, Interpreter
        self._lock = threading.Lock()
        probe = self._open(None)
        details = probe.get_input_details()[0]
        declared = int(details["shape"][0])
        self._idle: dict[int, list[Any]] = {declared: [probe]}
        self.batch_free = self._resizes(2 * declared)  # a size a free batch runs anyway (see run)
        self.input_name = details["name"]
        self.input_shape = [None if self.batch_free else declared, *(int(d) for d in details["shape"][1:])]
        self.output_names = [d["name"] for d in probe.get_output_details()]
        self.output_shapes = [[None, *(int(v) for v in d["shape"][1:])] for d in probe.get_output_details()]
        self.providers = ["LiteRT XNNPACK (CPU)"]

    def _open(self, batch: int | None) -> Any:
        try:
            with _quiet_stderr_once():
                interpreter = self._interpreter(model_path=str(self.path), num_threads=self.threads)
                if batch is not None:
                    details = interpreter.get_input_details()[0]
                    interpreter.resize_tensor_input(details["index"], [batch, *details["shape"][1:]])
                interpreter.allocate_tensors()  # where the XNNPACK delegate is applied, and says so
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: not a loadable LiteRT model ({exc})") from exc
        return interpreter

    def _resizes(self, batch: int) -> bool:
        """Whether the file runs ``batch`` images at once: every output must then lead with ``batch``
        rows (a Reshape with a baked-in batch may still load, folding the rows into one)."""
        try:
            interpreter = self._open(batch)
        except ModelError:
            return False
        if any(int(d["shape"][0]) != batch for d in interpreter.get_output_details()):
            return False
        self._idle[batch] = [interpreter]
        return True

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if not self.batch_free:
            return self._run_exact(batch)
        pieces, start = [], 0
        while start < len(batch):
            size = min(self.LARGEST_BATCH, 1 << (len(batch) - start).bit_length() - 1)
            pieces.append(self._run_exact(batch[start : start + size]))
            start += size
        return [np.concatenate([p[k] for p in pieces]) for k in range(len(self.output_names))]

    def _run_exact(self, batch: np.ndarray) -> list[np.ndarray]:
        size = len(batch)
        with self._lock:
            idle = self._idle.setdefault(size, [])
            interpreter = idle.pop() if idle else None
        if interpreter is None:
            interpreter = self._open(size)
        try:
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
            interpreter.invoke()
            return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
        finally:
            with self._lock:
                self._idle[size].append(interpreter)


_stderr_quieted = False
_stderr_lock = threading.Lock()
_stderr_saved: int | None = None  # the real stderr while fd 2 points at /dev/null


@contextmanager
def _quiet_stderr_once() -> Iterator[None]:
    """LiteRT's C++ logger writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to the
    process's stderr when the first interpreter of a process is allocated, and offers no switch to stop it;
    the CLI's stderr holds errors only, so that first allocation runs with file descriptor 2 pointed at
    /dev/null. The lock is held only for that first one; later interpreters are made without it."""
    global _stderr_quieted
    if not _stderr_quieted:
        with _stderr_lock:
            if not _stderr_quieted:
                with _stderr_to_devnull():
                    yield
                _stderr_quieted = True  # not after a file that failed to load: the message is still to come
                return
    yield


@contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    global _stderr_saved
    sys.stderr.flush()
    _stderr_saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        saved, _stderr_saved = _stderr_saved, None  # cleared before it is closed: a fork now restores nothing
        os.dup2(saved, 2)
        os.close(saved)


def _after_fork_in_child() -> None:
    """A process forked while another thread made the first interpreter gets its stderr back, and a
    lock nobody holds (ingest's workers are forked from the server, whose searches run in threads)."""
    global _stderr_lock, _stderr_saved
    _stderr_lock = threading.Lock()
    if _stderr_saved is not None:
        saved, _stderr_saved = _stderr_saved, None
        os.dup2(saved, 2)
        os.close(saved)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def open_session(path: Path, threads: int) -> Session:
    """A .tflite file on LiteRT, anything else on onnxruntime."""
    if path.suffix == ".tflite":
        return LiteSession(path, threads)
    return OrtSession(path, threads)


class InferenceModel:
    """A model that takes a batch of H x W x C float images: the base of every model class.

    It exists so that the runtime, layout (NCHW / NHWC), fixed batch sizes and session options are
    handled once.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        self.path = path
        self.session = open_session(path, threads)
        self.input_name = self.session.input_name
        self.output_names = self.session.output_names
        shape = self.session.input_shape
        if len(shape) != 4:
            raise ModelError(f"{path}: expected a 4-d image input, got shape {shape}")
        self.channels_first = shape[1] in (1, 3)
        height, width = (shape[2], shape[3]) if self.channels_first else (shape[1], shape[2])
        self.input_size: tuple[int | None, int | None] = (height, width)
        self.fixed_batch = shape[0]

    def run(self, batch: FloatArray) -> list[np.ndarray]:
        """Run N x H x W x C images; returns each output with N rows, whatever the model's batch."""
        if self.channels_first:
            batch = batch.transpose(0, 3, 1, 2)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.fixed_batch is None or self.fixed_batch == len(batch):
            return self.session.run(batch)
        pieces = [self._run_padded(batch[i : i + self.fixed_batch]) for i in range(0, len(batch), self.fixed_batch)]
        return [np.concatenate([p[k] for p in pieces]) for k in range(len(self.output_names))]

    def _run_padded(self, chunk: np.ndarray) -> list[np.ndarray]:
        count = len(chunk)
        if count < self.fixed_batch:
            pad = np.zeros((self.fixed_batch - count, *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        return [out[:count] for out in self.session.run(chunk)]
