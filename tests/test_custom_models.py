"""User-supplied ONNX models: a recognizer and an SCRFD-shaped detector, built here with onnx.helper.

The models are tiny and meaningless as face models, but they have exactly the interfaces
facefinder documents (ArcFace-style [N, 3, 112, 112] -> [N, D]; SCRFD's 9 outputs), so they test the
loading, decoding and the plumbing from `FaceFinder(recognizer=..., detector=...)` to search.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import LFW_PEOPLE, POLICY, lfw
from onnx import TensorProto, helper, numpy_helper

from facefinder.errors import CatalogError, ModelError
from facefinder.vision import protocols
from facefinder.vision.detect import Scrfd
from facefinder.vision.embed import RecognizerModel
from facefinder.vision.image import read_image

EMBED_DIM = 16
SCRFD_SIZE = 64
STRIDES = (8, 16, 32)
# Keypoint offsets from an anchor centre, in units of its stride: eyes, nose tip, mouth corners.
FIVE_POINTS = np.array([[-0.15, -0.1], [0.15, -0.1], [0.0, 0.05], [-0.12, 0.2], [0.12, 0.2]], np.float32)


def save_model(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="facefinder-tests")
    model.ir_version = 8  # loadable by any onnxruntime facefinder supports
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_recognizer(path: Path) -> Path:
    """[N, 3, 112, 112] -> GlobalAveragePool -> Flatten -> MatMul -> [N, 16]."""
    weights = np.random.default_rng(0).normal(size=(3, EMBED_DIM)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["embedding"]),
        ],
        "tiny_recognizer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", EMBED_DIM])],
        [numpy_helper.from_array(weights, "W")],
    )
    return save_model(graph, path)


def tiny_scrfd(path: Path, keypoints: bool = True, live_stride: int = 32, score_logit: float = 3.0) -> Path:
    """SCRFD's output layout on a 64x64 input: per stride, 2 anchors per cell, scores [A, 1],
    box distances [A, 4] and (with keypoints) five points [A, 10], all in units of the stride.

    Every anchor of ``live_stride`` scores sigmoid(score_logit); the others score ~0. Boxes reach
    half a stride on each side of the anchor centre; keypoints sit at FIVE_POINTS.
    """
    nodes, initializers, outputs = [], [], {"score": [], "bbox": [], "kps": []}
    for stride in STRIDES:
        cells = SCRFD_SIZE // stride
        nodes.append(
            helper.make_node(
                "AveragePool", ["input"], [f"pool{stride}"], kernel_shape=[stride, stride], strides=[stride, stride]
            )
        )
        heads = [
            ("score", 2, np.full(2, score_logit if stride == live_stride else -8.0)),
            ("bbox", 8, np.full(8, 0.5)),
            ("kps", 20, np.tile(FIVE_POINTS.reshape(-1), 2)),
        ]
        for head, channels, bias in heads[: 3 if keypoints else 2]:
            name = f"{head}{stride}"
            initializers += [
                numpy_helper.from_array(np.zeros((channels, 3, 1, 1), np.float32), f"{name}_w"),
                numpy_helper.from_array(bias.astype(np.float32), f"{name}_b"),
                numpy_helper.from_array(np.array([-1, channels // 2], np.int64), f"{name}_shape"),
            ]
            conv = [helper.make_node("Conv", [f"pool{stride}", f"{name}_w", f"{name}_b"], [f"{name}_conv"])]
            if head == "score":
                conv.append(helper.make_node("Sigmoid", [f"{name}_conv"], [f"{name}_act"]))
            last = conv[-1].output[0]
            nodes += conv + [
                helper.make_node("Transpose", [last], [f"{name}_nhwc"], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", [f"{name}_nhwc", f"{name}_shape"], [name]),
            ]
            outputs[head].append(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, [cells * cells * 2, channels // 2])
            )
    graph = helper.make_graph(
        nodes,
        "tiny_scrfd",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SCRFD_SIZE, SCRFD_SIZE])],
        outputs["score"] + outputs["bbox"] + outputs["kps"],
        initializers,
    )
    return save_model(graph, path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user-models")
    return {
        "recognizer": tiny_recognizer(folder / "tiny_recognizer.onnx"),
        "scrfd": tiny_scrfd(folder / "tiny_scrfd.onnx"),
        "scrfd6": tiny_scrfd(folder / "tiny_scrfd_nokps.onnx", keypoints=False),
    }


# ----- the recognizer -------------------------------------------------------------------------
def test_user_recognizer_loads_and_embeds(models):
    recognizer = RecognizerModel(models["recognizer"])
    assert isinstance(recognizer, protocols.Recognizer)
    assert recognizer.dim == EMBED_DIM and recognizer.size == 112 and recognizer.channels_first
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 255, size=(5, 112, 112, 3), dtype=np.uint8)
    vectors = recognizer.embed(crops, batch_size=2)  # batches of 2, 2 and 1
    assert vectors.shape == (5, EMBED_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # it really is this graph: the embedding is a projection of the mean colour
    weights = onnx.numpy_helper.to_array(onnx.load(str(models["recognizer"])).graph.initializer[0])
    expected = ((crops.astype(np.float32) - 127.5) / 128.0).mean(axis=(1, 2)) @ weights
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-4)
    assert recognizer.embed([]).shape == (0, EMBED_DIM)


def test_user_recognizer_through_facefinder(models, make_finder):
    ff = make_finder(recognizer=str(models["recognizer"]))
    assert ff.pipeline.recognizer.dim == EMBED_DIM
    assert ff.pipeline.model_id == "blazeface_full_range+tiny_recognizer"
    report = ff.ingest(lfw("Tony_Blair", 1).parent, collection="custom", **POLICY)
    assert (report.ingested, report.faces, report.failures) == (3, 3, [])
    [info] = ff.collections()
    assert info.model_id == "blazeface_full_range+tiny_recognizer"
    assert ff.store.index_size(info.id) == 3

    [record] = ff.search(lfw("Tony_Blair", 2), threshold=-1.0, top_k=3)
    assert len(record.candidates) == 3
    best = record.candidates[0]
    assert Path(best.source).name == "Tony_Blair_0002.jpg" and best.score == pytest.approx(1.0, abs=1e-3)
    assert len(ff.store.faces([best.face_id])[best.face_id][0].embedding) == EMBED_DIM * 4


def test_collections_of_different_models_do_not_mix(models, make_finder, tmp_path):
    custom = make_finder(tmp_path / "data", recognizer=str(models["recognizer"]))
    custom.ingest(lfw("Tony_Blair", 1), collection="custom", **POLICY)
    custom.close()

    default = make_finder(tmp_path / "data")
    with pytest.raises(CatalogError, match="'custom' was embedded with blazeface_full_range\\+tiny_recognizer"):
        default.search(lfw("Tony_Blair", 1), collections=["custom"])
    with pytest.raises(CatalogError, match="holds blazeface_full_range\\+tiny_recognizer embeddings"):
        default.ingest(lfw("Tony_Blair", 2), collection="custom", **POLICY)
    # searching "all collections" quietly skips the ones of another model
    default.ingest(lfw("Tony_Blair", 2), collection="default", **POLICY)
    [record] = default.search(lfw("Tony_Blair", 2), threshold=-1.0)
    assert {c.collection for c in record.candidates} == {"default"}


def test_unusable_model_files_are_model_errors(models, tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        RecognizerModel(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not protobuf")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        RecognizerModel(junk)
    flat = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "flat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
    )
    with pytest.raises(ModelError, match="expected a 4-d image input"):
        RecognizerModel(save_model(flat, tmp_path / "flat.onnx"))
    with pytest.raises(ModelError, match="SCRFD has 6 or 9 outputs, this model has 1"):
        Scrfd(models["recognizer"])


# ----- the SCRFD detector ---------------------------------------------------------------------
def test_user_scrfd_loads_and_decodes(models):
    detector = Scrfd(models["scrfd"])
    assert isinstance(detector, protocols.Detector)
    assert detector.size == SCRFD_SIZE and detector.has_keypoints
    image = read_image(str(lfw("Colin_Powell", 1)))  # 250x250: scale 64/250 into the model
    detections = detector.detect(image)
    assert isinstance(detections, list)
    # stride 32 on 64 px: 2x2 cells, 2 identical anchors each -> NMS keeps one per cell
    assert len(detections) == 4
    scale = SCRFD_SIZE / 250
    centres = sorted(((d.box[:2] + d.box[2:]) / 2 * scale).round().tolist() for d in detections)
    assert centres == [[0, 0], [0, 32], [32, 0], [32, 32]]
    for d in detections:
        assert d.score == pytest.approx(1 / (1 + np.exp(-3.0)), abs=1e-4)
        np.testing.assert_allclose((d.box[2:] - d.box[:2]) * scale, [32, 32], atol=1e-3)
        assert d.keypoints.shape == (5, 2) and d.five_points is not None
        centre = (d.box[:2] + d.box[2:]) / 2
        np.testing.assert_allclose(d.five_points, centre + FIVE_POINTS * 32 / scale, atol=1e-2)


def test_user_scrfd_without_keypoints_and_thresholds(models, tmp_path):
    detector = Scrfd(models["scrfd6"])
    assert not detector.has_keypoints
    detections = detector.detect(read_image(str(lfw("Colin_Powell", 1))))
    assert len(detections) == 4 and all(d.five_points is None for d in detections)
    quiet = Scrfd(tiny_scrfd(tmp_path / "quiet.onnx", score_logit=-3.0))  # every score ~0.05 < 0.5
    assert quiet.detect(read_image(str(lfw("Colin_Powell", 1)))) == []


def test_user_detector_and_recognizer_through_facefinder(models, make_finder, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for person in LFW_PEOPLE[:2]:
        shutil.copy(lfw(person, 1), folder / f"{person}.jpg")
    ff = make_finder(detector=str(models["scrfd"]), recognizer=str(models["recognizer"]))
    assert ff.pipeline.landmarker is None  # SCRFD brings its own five points
    assert ff.pipeline.model_id == "tiny_scrfd+tiny_recognizer"
    report = ff.ingest(folder, collection="synthetic", **POLICY)
    assert (report.ingested, report.faces, report.failures) == (2, 8, [])
    records = ff.search(folder / f"{LFW_PEOPLE[0]}.jpg", threshold=-1.0, top_k=1)
    assert len(records) == 4
    for record in records:
        assert Path(record.candidates[0].source).name == f"{LFW_PEOPLE[0]}.jpg"
        assert record.candidates[0].score == pytest.approx(1.0, abs=1e-3)
