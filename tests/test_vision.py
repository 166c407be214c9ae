"""The vision layer on real photos: detection, identity, EXIF orientation, quality, safe decoding."""

from __future__ import annotations

import io
import itertools
import random
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA, GALLERY, GROUP, GROUP_FACES, LFW_PEOPLE, PROBES, box_iou, lfw, save_jpeg
from PIL import Image, ImageFilter

from facefinder.errors import FaceFinderError, ImageError
from facefinder.services.calibration import default_calibration
from facefinder.vision import protocols
from facefinder.vision.image import decode_image, read_image
from facefinder.vision.pipeline import FacePipeline

THRESHOLD = default_calibration().threshold


# ----- 1. same person vs different person ----------------------------------------------------
@pytest.fixture(scope="module")
def lfw_embeddings(pipeline):
    """person -> three embeddings (the one face in each of their three LFW photos)."""
    out = {}
    for person in LFW_PEOPLE:
        images = [read_image(str(lfw(person, n))) for n in (1, 2, 3)]
        faces = pipeline.analyze(images)
        assert [len(f) for f in faces] == [1, 1, 1], person
        out[person] = [f[0].embedding for f in faces]
    return out


def test_same_person_scores_far_above_different_people(lfw_embeddings):
    same = [float(a @ b) for vecs in lfw_embeddings.values() for a, b in itertools.combinations(vecs, 2)]
    different = [
        float(a @ b)
        for p, q in itertools.combinations(lfw_embeddings, 2)
        for a in lfw_embeddings[p]
        for b in lfw_embeddings[q]
    ]
    assert len(same) == 15 and len(different) == 90
    # Every genuine pair is a match at the calibrated threshold and no impostor pair is ...
    assert min(same) > THRESHOLD, sorted(same)
    assert max(different) < THRESHOLD, sorted(different)[-5:]
    # ... with a wide gap between the two groups, not a lucky threshold.
    assert min(same) - max(different) > 0.2
    assert np.mean(same) - np.mean(different) > 0.5


def test_embeddings_are_unit_vectors(lfw_embeddings):
    vectors = np.stack([v for vecs in lfw_embeddings.values() for v in vecs])
    assert vectors.dtype == np.float32 and vectors.shape == (15, 192)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_compare_api_same_and_different_person(make_finder):
    ff = make_finder()
    same = ff.compare(lfw("George_W_Bush", 1), lfw("George_W_Bush", 3))
    different = ff.compare(lfw("George_W_Bush", 1), lfw("Colin_Powell", 1))
    assert same > THRESHOLD and different < THRESHOLD
    assert same - different > 0.5
    assert ff.compare(lfw("Hugo_Chavez", 1), lfw("Hugo_Chavez", 1)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("person, photo", [("amy", 1), ("sheldon", 1), ("howard", 3)])
def test_compare_demo_crops_probe_vs_gallery(make_finder, person, photo):
    """The bundled face-api.js crops: a probe matches its own person's gallery photo, not another's."""
    ff = make_finder()
    probe = PROBES / f"{person}_{person}5.png"
    same = ff.compare(probe, GALLERY / person / f"{person}{photo}.png")
    different = ff.compare(probe, GALLERY / "raj" / "raj1.png")
    assert same > THRESHOLD > different
    assert same - different > 0.4


def test_compare_without_a_face_names_the_photo(make_finder, tmp_path):
    blank = save_jpeg(np.full((200, 200, 3), 128, np.uint8), tmp_path / "blank.jpg")
    ff = make_finder()
    with pytest.raises(FaceFinderError, match="blank.jpg: no face found"):
        ff.compare(blank, lfw("Tony_Blair", 1))


# ----- 2. group photos -------------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", sorted(GROUP_FACES.items()))
def test_group_photo_face_count(pipeline, name, expected):
    image = read_image(str(GROUP / name))
    faces = pipeline.analyze([image])[0]
    assert len(faces) == expected
    height, width = image.shape[:2]
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert face.aligned.shape == (112, 112, 3)
        assert 0 < face.quality.score <= 1
    # No face is reported twice (tiles overlap; NMS must merge their detections).
    for a, b in itertools.combinations(faces, 2):
        assert box_iou(a.box, b.box) < 0.3


def test_batched_analysis_matches_one_by_one(pipeline):
    images = [read_image(str(GROUP / "sample4.jpg")), read_image(str(lfw("Tony_Blair", 1)))]
    together = pipeline.analyze(images)
    alone = [pipeline.analyze([image])[0] for image in images]
    assert [len(f) for f in together] == [len(f) for f in alone] == [4, 1]
    for batch_faces, single_faces in zip(together, alone):
        for a, b in zip(batch_faces, single_faces):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            assert float(a.embedding @ b.embedding) > 0.999


# ----- the seams: FacePipeline takes any models that satisfy vision/protocols.py --------------
def test_shipped_models_satisfy_the_protocols(pipeline):
    assert isinstance(pipeline.detector, protocols.Detector)
    assert isinstance(pipeline.landmarker, protocols.Landmarker)
    assert isinstance(pipeline.recognizer, protocols.Recognizer)
    assert not isinstance(object(), protocols.Detector | protocols.Landmarker | protocols.Recognizer)


def test_a_detector_of_no_model_class_plugs_in(pipeline):
    """A plain class with the protocol's members is a detector: no base class, no registration."""

    class Wrapped:
        path = Path("wrapped.onnx")

        def detect(self, image):
            return pipeline.detector.detect(image)

    assert isinstance(Wrapped(), protocols.Detector)
    custom = FacePipeline(Wrapped(), pipeline.recognizer, pipeline.landmarker)
    assert custom.model_id == f"wrapped+{Path(pipeline.recognizer.path).stem}"
    image = read_image(str(lfw("Tony_Blair", 1)))
    [[mine]], [[theirs]] = custom.analyze([image]), pipeline.analyze([image])
    np.testing.assert_array_equal(mine.box, theirs.box)
    np.testing.assert_array_equal(mine.embedding, theirs.embedding)


# ----- 4b. profile faces: the second detection pass (vision/fallback.py) ---------------------------
PROFILES = sorted((Path(__file__).parent / "data" / "cfp").glob("*/profile/*.jpg"))


@pytest.mark.parametrize("photo", PROFILES, ids=lambda p: "/".join(p.parts[-3:]))
def test_profiles_blazeface_misses_are_found_by_the_second_pass(pipeline, photo):
    """CFP profiles on which BlazeFace alone finds nothing: the default pipeline finds the one face."""
    image = read_image(str(photo))
    assert pipeline.detector.primary.detect(image) == []
    [face] = pipeline.analyze([image])[0]
    height, width = image.shape[:2]
    x1, y1, x2, y2 = face.box
    assert abs((x1 + x2) / 2 - width / 2) < 0.2 * width  # the centred face, not a corner of clutter
    assert y2 - y1 > 0.3 * height


def test_second_pass_finds_nothing_in_face_free_images(pipeline):
    """Noise and a flat photo are where a low-floor detector invents faces; the presence check stops it."""
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    blocks = np.kron(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), np.ones((10, 10, 1), np.uint8))
    for image in (noise, blocks, np.full((200, 200, 3), 128, np.uint8)):
        assert pipeline.analyze([image]) == [[]]


def test_second_pass_leaves_photos_with_faces_alone(pipeline, monkeypatch):
    """Where BlazeFace finds a face the fallback never runs: its cost there is nothing."""
    assert isinstance(pipeline.detector, protocols.Detector)
    assert pipeline.model_id.startswith("blazeface_full_range+")  # collections filled before keep their id
    monkeypatch.setattr(pipeline.detector.secondary, "detect", lambda image: pytest.fail("second pass ran"))
    assert len(pipeline.analyze([read_image(str(lfw("Tony_Blair", 1)))])[0]) == 1


# ----- 5. EXIF orientation -------------------------------------------------------------------
# Stored pixels for each EXIF orientation such that exif_transpose() gives the upright photo back.
STORED_AS = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_exif_orientation_is_applied_before_detection(pipeline, tmp_path, orientation):
    photo = Image.open(lfw("George_W_Bush", 1)).convert("RGB").crop((20, 0, 230, 250))  # not square
    upright_path = tmp_path / "upright.jpg"
    photo.save(upright_path, quality=95)
    rotated = photo.transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    rotated_path = tmp_path / f"rotated-{orientation}.jpg"
    rotated.save(rotated_path, quality=95, exif=exif.tobytes())
    assert Image.open(rotated_path).getexif()[0x0112] == orientation

    upright, turned = read_image(str(upright_path)), read_image(str(rotated_path))
    assert upright.shape == turned.shape == (250, 210, 3)
    faces_upright, faces_turned = pipeline.analyze([upright, turned])
    assert len(faces_upright) == len(faces_turned) == 1
    assert box_iou(faces_upright[0].box, faces_turned[0].box) > 0.85
    assert float(faces_upright[0].embedding @ faces_turned[0].embedding) > 0.9

    # The decoded pixels are the upright photo, not the stored (sideways) ones: the tag was applied.
    stored = np.asarray(rotated)
    if orientation != 3:
        assert stored.shape == (210, 250, 3)
    else:
        assert np.abs(stored.astype(int) - upright).mean() > 20
    assert np.abs(turned.astype(int) - upright).mean() < 3


def test_compare_upright_and_exif_rotated_copy(make_finder, tmp_path):
    photo = Image.open(lfw("Vladimir_Putin", 2)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = tmp_path / "putin-rotated.jpg"
    photo.transpose(Image.Transpose.ROTATE_90).save(rotated, quality=95, exif=exif.tobytes())
    assert make_finder().compare(lfw("Vladimir_Putin", 2), rotated) > 0.9


# ----- 11. quality ---------------------------------------------------------------------------
def test_blurred_face_scores_lower_sharpness(pipeline):
    photo = Image.open(lfw("Colin_Powell", 1)).convert("RGB")
    sharp = np.asarray(photo)
    blurred = np.asarray(photo.filter(ImageFilter.GaussianBlur(radius=3)))
    [sharp_faces], [blurred_faces] = pipeline.analyze([sharp]), pipeline.analyze([blurred])
    assert len(sharp_faces) == len(blurred_faces) == 1
    q_sharp, q_blur = sharp_faces[0].quality, blurred_faces[0].quality
    assert q_blur.sharpness < 0.5 * q_sharp.sharpness
    assert q_blur.score < q_sharp.score
    for part in ("size", "sharpness", "pose", "detection", "score"):
        assert 0.0 <= getattr(q_sharp, part) <= 1.0
    assert set(q_sharp.as_dict()) == {"size", "sharpness", "pose", "detection", "score", "yaw"}


def test_yaw_tells_a_turned_face_and_its_side(pipeline):
    """The signed head turn: near 0 for a frontal face, large for a profile, and mirrored with the photo."""
    frontal = np.asarray(Image.open(lfw("Colin_Powell", 1)).convert("RGB"))
    profile = np.asarray(Image.open(DATA / "cfp" / "085" / "profile" / "02.jpg").convert("RGB"))
    [straight], [turned], [mirrored] = pipeline.analyze([frontal, profile, np.ascontiguousarray(profile[:, ::-1])])
    assert abs(straight.quality.yaw) < 30
    assert abs(turned.quality.yaw) > 30 and np.sign(turned.quality.yaw) == -np.sign(mirrored.quality.yaw)


def test_small_face_scores_lower_size(pipeline):
    photo = Image.open(lfw("Hugo_Chavez", 1)).convert("RGB")
    big = np.asarray(photo.resize((500, 500)))
    small = np.asarray(Image.new("RGB", (500, 500), (120, 120, 120)))
    small = small.copy()
    small[200:300, 200:300] = np.asarray(photo.resize((100, 100)))
    [big_faces], [small_faces] = pipeline.analyze([big]), pipeline.analyze([small])
    assert len(big_faces) == len(small_faces) == 1
    assert small_faces[0].quality.size < big_faces[0].quality.size


# ----- decoding: every failure names the file and says why -----------------------------------
def _jpeg_bytes() -> bytes:
    return lfw("Tony_Blair", 1).read_bytes()


def _garbled(data: bytes) -> bytes:
    rng = random.Random(7)
    damaged = bytearray(data)
    damaged[1000:3000] = bytes(rng.getrandbits(8) for _ in range(2000))
    return bytes(damaged)


@pytest.mark.parametrize(
    "data, reason",
    [
        pytest.param(b"", "not-an-image", id="empty"),
        pytest.param(bytes(random.Random(1).getrandbits(8) for _ in range(4096)), "not-an-image", id="random-bytes"),
        pytest.param(b"this is a shopping list, not a photo\n" * 10, "not-an-image", id="text"),
        pytest.param(_jpeg_bytes()[: len(_jpeg_bytes()) // 2], "truncated", id="first-half-of-jpeg"),
        pytest.param(_garbled(_jpeg_bytes()), "corrupt", id="garbled-jpeg"),
    ],
)
def test_decode_image_failure_reasons(data, reason):
    with pytest.raises(ImageError) as info:
        decode_image(data, "some/photo.jpg")
    assert info.value.reason == reason
    assert info.value.source == "some/photo.jpg"
    assert str(info.value).startswith(f"some/photo.jpg: {reason}")


def test_decode_image_pixel_cap():
    data = _jpeg_bytes()
    assert decode_image(data, "ok.jpg", max_pixels=250 * 250).shape == (250, 250, 3)
    with pytest.raises(ImageError) as info:
        decode_image(data, "big.jpg", max_pixels=250 * 250 - 1)
    assert info.value.reason == "too-large" and "250x250" in info.value.detail


def test_decode_image_formats_and_modes():
    """Grayscale, palette and RGBA photos all come back as H x W x 3 RGB uint8."""
    rgb = np.asarray(Image.open(lfw("Tony_Blair", 1)).convert("RGB"))
    for mode, fmt in [("L", "PNG"), ("P", "PNG"), ("RGBA", "PNG"), ("RGB", "WEBP"), ("RGB", "BMP")]:
        buffer = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buffer, format=fmt)
        decoded = decode_image(buffer.getvalue(), f"x.{fmt.lower()}")
        assert decoded.shape == (250, 250, 3) and decoded.dtype == np.uint8, (mode, fmt)


def test_decode_image_refuses_tiny_images():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    with pytest.raises(ImageError) as info:
        decode_image(buffer.getvalue(), "icon.png")
    assert info.value.reason == "not-an-image"


def test_read_image_missing_file(tmp_path):
    with pytest.raises(ImageError) as info:
        read_image(str(tmp_path / "nope.jpg"))
    assert info.value.reason == "unreadable" and "nope.jpg" in str(info.value)
