"""The two runtimes (vision/inference.py): LiteRT runs the shipped models' .tflite files on the CPU,
onnxruntime their ONNX conversions (and every model on a GPU or of a user's). Whichever runs, a photo
must give the same faces and the same embeddings, or collections filled under one would be searched
wrongly under the other; and LiteRT's interpreters, which are not thread-safe, must not mix runs."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import DATA, GROUP, LFW_PEOPLE, lfw
from test_people import run_cli

from facefinder.config import DEVICE_ENV, RUNTIME_ENV
from facefinder.errors import ModelError
from facefinder.vision.embed import RecognizerModel
from facefinder.vision.image import read_image
from facefinder.vision.inference import LiteSession, OrtSession, litert_available
from facefinder.vision.landmarks import FaceMesh
from facefinder.vision.models import MODELS, missing_models, model_path, onnx_path, require_models, tflite_path
from facefinder.vision.pipeline import FacePipeline


def sample_photos() -> list:
    photos = [lfw(person, 1) for person in LFW_PEOPLE[:8]] + sorted(GROUP.glob("*.jpg"))[:2]
    photos += sorted((DATA / "cfp").rglob("*.jpg"))[:6]  # profiles: the second detection pass runs
    return [read_image(p) for p in photos]


@pytest.fixture(scope="module")
def both(models_dir):
    """The default pipeline on each runtime."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(RUNTIME_ENV, "onnxruntime")
        on_ort = FacePipeline.default(models_dir)
        mp.setenv(RUNTIME_ENV, "litert")
        on_lite = FacePipeline.default(models_dir)
    return on_ort, on_lite


def test_the_shipped_models_run_on_litert_by_default(both, models_dir, monkeypatch):
    on_ort, on_lite = both
    assert isinstance(on_lite.recognizer.session, LiteSession) and isinstance(on_ort.recognizer.session, OrtSession)
    assert on_lite.model_id == on_ort.model_id  # one model, whichever file runs it: collections stay searchable
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    assert model_path(models_dir, "mobilefacenet").suffix == ".tflite"
    monkeypatch.setenv(DEVICE_ENV, "cuda")  # a GPU runs the ONNX files (onnxruntime's CUDA provider)
    assert model_path(models_dir, "mobilefacenet").suffix == ".onnx"


def test_both_runtimes_find_the_same_faces_and_embeddings(both):
    on_ort, on_lite = both
    images = sample_photos()
    faces_ort, faces_lite = on_ort.analyze(images), on_lite.analyze(images)
    assert [len(f) for f in faces_ort] == [len(f) for f in faces_lite]
    assert sum(len(f) for f in faces_ort) >= len(images)
    for a, b in zip(sum(faces_ort, []), sum(faces_lite, [])):
        assert np.abs(a.box - b.box).max() < 1.0
        assert np.abs(a.landmarks - b.landmarks).max() < 1.0
        assert float(a.embedding @ b.embedding) > 0.999


def test_any_batch_gives_what_single_runs_give(pipeline, models_dir):
    images = sample_photos()
    crops = [face.aligned for faces in pipeline.analyze(images) for face in faces][:7]
    recognizer = RecognizerModel(tflite_path(models_dir, "mobilefacenet"))
    assert recognizer.session.batch_free  # its batch of 2 was freed when it was fetched
    together = recognizer.embed(crops, batch_size=7)  # runs of 4, 2 and 1
    one_by_one = np.concatenate([recognizer.embed([crop]) for crop in crops])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    mesh = FaceMesh(tflite_path(models_dir, "facemesh"))
    group = read_image(sorted(GROUP.glob("*.jpg"))[0])
    detections = pipeline.detector.detect(group)  # several faces: one run of the landmark model
    assert len(detections) >= 3
    np.testing.assert_allclose(
        np.stack(mesh.five_points(group, detections)),
        np.stack([mesh.five_points(group, [d])[0] for d in detections]),
        atol=1e-3,
    )


def test_a_fixed_batch_model_keeps_its_batch(models_dir):
    from facefinder.vision.detect import BlazeFace

    detector = BlazeFace(tflite_path(models_dir, "blazeface_full_range"))
    assert not detector.session.batch_free and detector.fixed_batch == 1
    group = read_image(sorted(GROUP.glob("*.jpg"))[0])  # large: the whole photo and its tiles, one run each
    assert len(detector.detect(group)) >= 3


def test_runs_from_many_threads_do_not_mix(pipeline, models_dir):
    crops = [face.aligned for faces in pipeline.analyze(sample_photos()) for face in faces]
    recognizer = RecognizerModel(tflite_path(models_dir, "mobilefacenet"))
    alone = [recognizer.embed([crop]) for crop in crops]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            at_once = list(pool.map(lambda crop: recognizer.embed([crop]), crops))
            for a, b in zip(alone, at_once):
                np.testing.assert_allclose(a, b, atol=1e-6)


def test_an_old_cache_without_tflite_files_runs_on_onnxruntime(models_dir, tmp_path, monkeypatch):
    for name in MODELS:
        shutil.copy(onnx_path(models_dir, name), onnx_path(tmp_path, name))
    require_models(tmp_path)  # runs as it is...
    assert missing_models(tmp_path) == list(MODELS)  # ...and `models fetch` adds the .tflite files
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    assert model_path(tmp_path, "mobilefacenet") == onnx_path(tmp_path, "mobilefacenet")
    assert isinstance(FacePipeline.default(tmp_path).recognizer.session, OrtSession)


def test_the_runtime_setting_is_checked(monkeypatch, tmp_path):
    monkeypatch.setenv(RUNTIME_ENV, "onnxruntime")
    assert not litert_available()
    monkeypatch.setenv(RUNTIME_ENV, "tensorrt")
    with pytest.raises(ModelError, match="FACEFINDER_RUNTIME: one of litert, onnxruntime, not 'tensorrt'"):
        litert_available()
    listed = run_cli(tmp_path, "models", "list", expect=2)  # one line, no traceback
    assert listed.stderr.strip() == "error: FACEFINDER_RUNTIME: one of litert, onnxruntime, not 'tensorrt'"
    monkeypatch.setenv(RUNTIME_ENV, "litert")
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(ModelError, match="FACEFINDER_RUNTIME=litert runs on the CPU only"):
        litert_available()


def test_mobilefacenet_runs_prelu_as_one_operator(models_dir):
    """The exporter's five-operator PReLU is one PRELU in the cached file; rewriting again changes nothing."""
    from ai_edge_litert.interpreter import Interpreter

    from facefinder.vision.tflite_graph import prepare_for_litert

    cached = tflite_path(models_dir, "mobilefacenet").read_bytes()

    def operators(model: bytes) -> list[str]:
        return [op["op_name"] for op in Interpreter(model_content=model)._get_ops_details()]

    names = operators(cached)
    assert names.count("PRELU") == 33 and "ABS" not in names and "SUB" not in names
    assert operators(prepare_for_litert(cached, free_batch=True)) == names


def test_a_process_forked_mid_load_gets_a_free_lock(models_dir):
    """Ingest workers are forked from the server, whose searches load interpreters in threads."""
    import multiprocessing

    from facefinder.vision import inference

    def child(queue) -> None:
        queue.put(inference._stderr_lock.acquire(timeout=5))

    with inference._stderr_lock:  # as if another thread were making the first interpreter
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        process = context.Process(target=child, args=(queue,))
        process.start()
        took_it = queue.get(timeout=30)
        process.join(30)
    assert took_it and process.exitcode == 0


def test_a_broken_tflite_file_is_a_model_error(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"TFL3 but not really a model")
    with pytest.raises(ModelError, match="junk.tflite: not a loadable LiteRT model"):
        RecognizerModel(junk)
