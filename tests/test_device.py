"""Where the models run (--device / FACEFINDER_DEVICE, vision/inference.py): the CPU by default, CUDA
when the GPU build of onnxruntime is installed, and a clear error otherwise. The GPU half runs only
where CUDA is present and is skipped elsewhere."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from helpers import LFW_PEOPLE, lfw
from test_people import run_cli

from facefinder.config import DEVICE_ENV
from facefinder.errors import ModelError
from facefinder.vision.image import read_image
from facefinder.vision.inference import providers

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_the_cpu_by_default(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert providers() == ["CPUExecutionProvider"]
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert providers() == ["CPUExecutionProvider"]


def test_an_unknown_device_is_named(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    with pytest.raises(ModelError, match="FACEFINDER_DEVICE .*one of cpu, cuda, not 'tpu'"):
        providers()


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has CUDA")
def test_cuda_without_the_gpu_build_is_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match=r"facefinder\[gpu\]"):
        providers("cuda")
    monkeypatch.setenv(DEVICE_ENV, "cpu")  # restored after the test: the CLI sets it in this process
    result = run_cli(tmp_path / "data", "--device", "cuda", "search", lfw(LFW_PEOPLE[0], 1), expect=2)
    assert "no CUDA provider" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA provider here (the GPU build of onnxruntime and a GPU)")
def test_a_face_embeds_the_same_on_the_gpu(models_dir, monkeypatch):
    from facefinder.vision.pipeline import FacePipeline

    image = read_image(lfw(LFW_PEOPLE[0], 1))
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    on_cpu = FacePipeline.default(models_dir).analyze([image])[0][0].embedding
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    gpu = FacePipeline.default(models_dir)
    assert "CUDAExecutionProvider" in gpu.recognizer.session.providers
    on_gpu = gpu.analyze([image])[0][0].embedding
    assert float(np.dot(on_cpu, on_gpu) / np.linalg.norm(on_cpu) / np.linalg.norm(on_gpu)) > 0.999
