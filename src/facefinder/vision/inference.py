"""The one inference base every model goes through: an ONNX session plus tensor plumbing.

Subclasses describe only what differs between models (pre-processing and decoding); the base
hides NCHW vs NHWC layouts and models whose batch dimension is fixed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from facefinder.config import DEVICE_ENV
from facefinder.errors import ModelError

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]  # H x W x 3, RGB
DEVICES = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def providers(device: str | None = None) -> list[str]:
    """The ONNX Runtime providers for ``device`` (default: $FACEFINDER_DEVICE, else cpu). An environment
    variable rather than an argument, so that ingest's worker processes inherit it. ``cuda`` needs the
    GPU build of onnxruntime; asked for without it, it is an error, never a silent fall back to the CPU."""
    name = (device or os.environ.get(DEVICE_ENV) or "cpu").strip().lower()
    if name not in DEVICES:
        raise ModelError(f"{DEVICE_ENV} (--device): one of {', '.join(DEVICES)}, not {name!r}")
    if name == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ModelError(
            "--device cuda: this onnxruntime has no CUDA provider; install the GPU build "
            "(pip uninstall onnxruntime; pip install 'facefinder[gpu]') on a machine with an NVIDIA driver"
        )
    return DEVICES[name]


class OnnxModel:
    """An ONNX model that takes a batch of H x W x C float images: the base of every model class.

    It exists so that layout (NCHW / NHWC), fixed batch sizes and session options are handled once.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if threads > 1:  # idle threads spinning steal the cores FAISS and other workers need
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            chosen = providers()
            self.session = ort.InferenceSession(str(path), options, providers=chosen)
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelError(f"{path}: not a loadable ONNX model ({exc})") from exc
        if chosen[0] not in self.session.get_providers():  # the GPU build without a working CUDA: it falls back
            raise ModelError(f"{path}: {chosen[0]} did not load (is the NVIDIA driver, CUDA and cuDNN installed?)")
        self.path = path
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        shape = list(model_input.shape)
        if len(shape) != 4:
            raise ModelError(f"{path}: expected a 4-d image input, got shape {shape}")
        self.channels_first = shape[1] in (1, 3)
        height, width = (shape[2], shape[3]) if self.channels_first else (shape[1], shape[2])
        self.input_size: tuple[int | None, int | None] = (
            height if isinstance(height, int) else None,
            width if isinstance(width, int) else None,
        )
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, batch: FloatArray) -> list[np.ndarray]:
        """Run N x H x W x C images; returns each output with N rows, whatever the model's batch."""
        if self.channels_first:
            batch = batch.transpose(0, 3, 1, 2)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.fixed_batch is None or self.fixed_batch == len(batch):
            return self.session.run(None, {self.input_name: batch})
        pieces = [self._run_padded(batch[i : i + self.fixed_batch]) for i in range(0, len(batch), self.fixed_batch)]
        return [np.concatenate([p[k] for p in pieces]) for k in range(len(self.output_names))]

    def _run_padded(self, chunk: np.ndarray) -> list[np.ndarray]:
        count = len(chunk)
        if count < self.fixed_batch:
            pad = np.zeros((self.fixed_batch - count, *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        return [out[:count] for out in self.session.run(None, {self.input_name: chunk})]
