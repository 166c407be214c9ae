"""Profile faces: which second detection pass finds the CFP profiles BlazeFace misses, at what cost.

Every candidate runs on (a) the CFP profile photos the first pass (BlazeFace, 0.6 floor) misses,
(b) face-free images (noise, and background crops of the group photos kept clear of every face that
BlazeFace finds even at a 0.2 floor: hands, clothes, furniture), (c) frontal CFP photos, where a
second face counts as a false extra face when run alone. Times are per photo on one thread. Then the
integrated pipeline (vision/fallback.py) on LFW: how often the second pass runs and what it costs.

    .venv/bin/python benchmarks/profiles.py [--data ../shared/data] [--dlib DIR] [--only haar]

``--dlib DIR``: a folder holding dlib (``pip install --target DIR dlib-bin``) and
``mmod_human_face_detector.dat`` (from PyPI face-recognition-models 0.3.0). ``--only haar`` needs an
OpenCV 4 on the path (OpenCV 5 has no CascadeClassifier) and adds its rows to the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from _common import REPO_ROOT, RESULTS_DIR, CpuWatch, loadavg, machine, models_dir, spread

from facefinder.vision.detect import BlazeFace, nms
from facefinder.vision.fallback import ProfileDetector
from facefinder.vision.image import decode_photo
from facefinder.vision.pipeline import DEFAULT_MIN_FACE, FacePipeline

DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()
OUTPUT = RESULTS_DIR / "profiles.json"
Boxes = list[np.ndarray]


def load(paths: list[Path]) -> list[np.ndarray]:
    return [decode_photo(p.read_bytes(), str(p)).image for p in paths]


def face_free(data: Path, blazeface_path: Path) -> list[np.ndarray]:
    """100 noise images (uniform, smoothed, blocky) and up to 20 face-free crops of each sample photo."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(100):
        h, w = (int(v) for v in rng.integers(120, 400, 2))
        if i % 3 == 0:
            images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            continue
        k = int(rng.integers(2, 20))
        small = rng.integers(0, 256, (max(2, h // k), max(2, w // k), 3), dtype=np.uint8)
        images.append(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC if i % 3 == 1 else cv2.INTER_NEAREST))
    low = BlazeFace(blazeface_path, 1, 0.2)
    sources = sorted((data / "samples" / "group-photos").glob("*.jpg"))
    sources += sorted((data / "samples" / "face-recognition-pkg").glob("*.jpg"))
    for image in load(sources):
        height, width = image.shape[:2]
        faces = [d.box for d in low.detect(image)]
        kept = 0
        for _ in range(400):
            side = int(rng.integers(100, max(101, min(height, width) // 2)))
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            if kept < 20 and all(clear_of(b, x, y, side) for b in faces):
                images.append(image[y : y + side, x : x + side].copy())
                kept += 1
    return images


def clear_of(box: np.ndarray, x: int, y: int, side: int) -> bool:
    """The crop stays a face width away from the face, and a face height and a half below it (neck)."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    return not (x < box[2] + bw and x + side > box[0] - bw and y < box[3] + 1.5 * bh and y + side > box[1] - bh)


def mirrored(detect: Callable[[np.ndarray], Boxes]) -> Callable[[np.ndarray], Boxes]:
    """``detect`` on the photo, else on its mirror image with the boxes mapped back."""

    def run(image: np.ndarray) -> Boxes:
        found = detect(image)
        if found:
            return found
        width = image.shape[1]
        boxes = detect(np.ascontiguousarray(image[:, ::-1]))
        return [np.array([width - b[2], b[1], width - b[0], b[3]]) for b in boxes]

    return run


def blazeface_candidates(models: Path, pipeline: FacePipeline) -> dict[str, Callable[[np.ndarray], Boxes]]:
    path = models / "blazeface_full_range.onnx"
    out: dict[str, Callable[[np.ndarray], Boxes]] = {}
    for floor in (0.5, 0.4, 0.3, 0.2):
        low = BlazeFace(path, 1, floor)
        out[f"BlazeFace, floor {floor}, + mirror"] = mirrored(lambda im, det=low: [d.box for d in det.detect(im)])
    one_crop = ProfileDetector(path, pipeline.landmarker, 1, 0.3, 0.3, 4, DEFAULT_MIN_FACE)
    out["BlazeFace 0.3 + mirror + FaceMesh check, one crop"] = lambda im: one_crop_check(one_crop, im)
    for floor, presence in ((0.3, 0.3), (0.2, 0.3), (0.2, 0.5)):
        det = ProfileDetector(path, pipeline.landmarker, 1, floor, presence, 6, DEFAULT_MIN_FACE)
        name = f"ProfileDetector: BlazeFace {floor} + mirror + padded, FaceMesh presence >= {presence}"
        out[name] = lambda im, det=det: [d.box for d in det.detect(im)]
    return out


def one_crop_check(det: ProfileDetector, image: np.ndarray) -> Boxes:
    """The presence check with a single crop centred on the box (what the six crops improve on)."""
    found = [d for d in det.proposals(image) if d.box[3] - d.box[1] >= DEFAULT_MIN_FACE]
    if not found:
        return []
    keep = nms(np.stack([d.box for d in found]), np.array([d.score for d in found]), det.blazeface.iou)
    found = [found[i] for i in keep[:4]]
    presence = det.mesh.presence(image, [d.box for d in found], crops=[(1.0, 0.0)])
    return [d.box for d, p in zip(found, presence) if p >= 0.3]


def dlib_candidates(folder: Path) -> dict[str, Callable[[np.ndarray], Boxes]]:
    sys.path.insert(0, str(folder))
    import dlib  # noqa: PLC0415 - optional, only for this comparison

    cnn = dlib.cnn_face_detection_model_v1(str(folder / "mmod_human_face_detector.dat"))
    hog = dlib.get_frontal_face_detector()

    def boxes(rects) -> Boxes:
        return [np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32) for r in rects]

    return {
        "dlib MMOD CNN, no upsampling": lambda im: boxes(r.rect for r in cnn(im, 0)),
        "dlib HOG, no upsampling": lambda im: boxes(hog(im, 0)),
    }


def haar_candidates() -> dict[str, Callable[[np.ndarray], Boxes]]:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_profileface.xml")

    def run(image: np.ndarray) -> Boxes:
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        found = cascade.detectMultiScale(gray, 1.1, 3, minSize=(20, 20))
        return [np.array([x, y, x + w, y + h], np.float32) for x, y, w, h in found]

    return {"OpenCV 4 Haar profile cascade (+ mirror), 3 neighbours": mirrored(run)}


def measure(detect: Callable[[np.ndarray], Boxes], sets: dict[str, list[np.ndarray]]) -> dict:
    """Photos with a face >= min_face found, per set; frontal: photos with more than one; ms per photo."""
    out = {}
    for name, images in sets.items():
        started = time.perf_counter()
        found = [[b for b in detect(im) if b[3] - b[1] >= DEFAULT_MIN_FACE] for im in images]
        ms = (time.perf_counter() - started) / len(images) * 1000
        counted = sum(len(f) > 1 for f in found) if name == "frontal" else sum(bool(f) for f in found)
        out[name] = {"photos": counted, "of": len(images), "ms_per_photo": round(ms, 1)}
        if name == "missed_profiles":
            out[name]["centred"] = sum(centred(im, f) for im, f in zip(images, found))
    return out


def centred(image: np.ndarray, boxes: Boxes) -> bool:
    """A box centred in the middle 60% of the photo: CFP profiles are centred crops, so this is the face."""
    height, width = image.shape[:2]
    return any(
        abs((b[0] + b[2] - width) / 2) < 0.3 * width and abs((b[1] + b[3] - height) / 2) < 0.3 * height for b in boxes
    )


def lfw_cost(pipeline: FacePipeline, lfw: Path, count: int) -> dict:
    """Detection time per LFW photo, first pass alone and with the fallback; photos where it ran."""
    images = load(spread(sorted(lfw.rglob("*.jpg")), count))
    fallback = pipeline.detector
    times = {}
    for name, det in (("first_pass", fallback.primary), ("with_fallback", fallback)):
        started = time.perf_counter()
        for image in images:
            det.detect(image)
        times[name] = round((time.perf_counter() - started) / len(images) * 1000, 2)
    ran = sum(not any(d.box[3] - d.box[1] >= DEFAULT_MIN_FACE for d in fallback.primary.detect(im)) for im in images)
    return {"photos": len(images), "ms_per_photo": times, "second_pass_ran": ran}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models")
    parser.add_argument("--dlib", type=Path, help="folder with dlib and mmod_human_face_detector.dat")
    parser.add_argument(
        "--only", choices=("haar", "one-crop"), help="measure one candidate (haar needs OpenCV 4), merge into the JSON"
    )
    parser.add_argument("--frontal", type=int, default=200, help="frontal photos for false extra faces")
    parser.add_argument("--lfw", type=int, default=1000, help="LFW photos for the cost on found faces")
    args = parser.parse_args()
    models = models_dir(args.models)
    pipeline = FacePipeline.default(models, threads=1)
    cfp = args.data / "cfp-dev" / "images"
    if not cfp.is_dir():
        sys.exit(f"error: CFP not found at {cfp}; pass --data DIR (the shared data)")
    profiles = sorted(cfp.glob("*/profile/*.jpg"))
    with CpuWatch() as watch:
        first = pipeline.detector.primary
        missed = [p for p, im in zip(profiles, load(profiles)) if not pipeline_finds(first, im)]
        sets = {
            "missed_profiles": load(missed),
            "face_free": face_free(args.data, models / "blazeface_full_range.onnx"),
            "frontal": load(spread(sorted(cfp.glob("*/frontal/*.jpg")), args.frontal)),
        }
        candidates = haar_candidates() if args.only == "haar" else blazeface_candidates(models, pipeline)
        if args.only == "one-crop":
            candidates = {k: v for k, v in candidates.items() if "one crop" in k}
        if args.dlib and not args.only:
            candidates.update(dlib_candidates(args.dlib))
        rows = {}
        for name, detect in candidates.items():
            rows[name] = measure(detect, sets)
            print(name, json.dumps(rows[name]), flush=True)
        lfw = None if args.only else lfw_cost(pipeline, args.data / "lfw" / "images", args.lfw)
    write(args, profiles, missed, rows, lfw, watch.result)


def pipeline_finds(detector, image: np.ndarray) -> bool:
    return any(d.box[3] - d.box[1] >= DEFAULT_MIN_FACE for d in detector.detect(image))


def write(args, profiles, missed, rows, lfw, watch) -> None:
    result = json.loads(OUTPUT.read_text()) if args.only and OUTPUT.is_file() else {}
    result.setdefault("candidates", {}).update(rows)
    if not args.only:
        result.update(
            {
                "profiles": len(profiles),
                "missed_by_first_pass": len(missed),
                "missed": [str(p.relative_to(args.data)) for p in missed],
                "lfw_cost": lfw,
            }
        )
    result.setdefault("benchmark", {})[f"only {args.only}" if args.only else "main"] = {
        "machine": machine(),
        **watch,
        "loadavg_after": loadavg(),
    }
    OUTPUT.write_text(json.dumps(result, indent=2))
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
