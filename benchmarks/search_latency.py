"""Search latency at 10k and 100k faces: the raw FAISS index, the store, and a whole probe search.

    python benchmarks/search_latency.py                       # --sizes 10000,100000
    python benchmarks/search_latency.py --sizes 1000000 --queries 200

The gallery: real MobileFaceNet embeddings of LFW faces plus synthetic face-like vectors.

* Real: ``benchmarks/results/lfw_embeddings.npz`` (key ``embeddings``, float32 N x 192) when it
  exists (the accuracy benchmark may write it), else ``--real`` LFW photos (sorted paths, evenly
  strided) embedded here with the shipped pipeline; every face found is used.
* Synthetic, filling the gallery up to N: N/5 identity centres drawn uniformly on the 192-d unit
  sphere, 5 samples each, sample = normalise(centre + noise), noise ~ N(0, sigma^2 I) with
  sigma = sqrt((1/0.7 - 1) / 192) ~= 0.047, so that two samples of one identity have cosine ~0.7
  (E[cos] ~= 1 / (1 + 192 sigma^2)) and two identities ~0 +- 0.07. The measured figures are in the
  JSON. Exact (flat) search costs the same whatever the vectors, so the synthetic part only has to
  make the top-k and the catalog look realistic.

Queries (``--queries``, default 500, single-query calls, k=10): half fresh samples of synthetic
identities, half real embeddings with a little noise; after 20 warm-up calls.

Measured, for each size N:

(a) ``VectorIndex.search`` alone (FAISS IndexIDMap2(IndexFlatIP)), one query per call, with
    FAISS's default OpenMP threads and with 1 thread; plus one batched call of all queries.
(b) Store level, through a real FaceStore whose SQLite catalog holds the N faces (images, faces
    with real-looking thumbnails, box, landmarks, journal): ``FaceStore.search`` (which first runs
    ``refresh()``, a journal query) + ``FaceStore.faces`` (the catalog rows of the hits) per query.
    The catalog is filled by a bulk SQLAlchemy insert, then ``reload()`` rebuilds the index from
    it and ``checkpoint()`` saves it; those load times are reported but are not the metric. Also
    timed: opening the store from its checkpoint, and ``add_image`` of one 1-face photo into the
    N-face store (the per-photo catalog+index write an ingest does).
(c) End to end: ``FaceFinder.search(photo)`` of one LFW probe photo (a second photo of a person
    whose first photo is in the gallery): decode + detect + landmarks + embed + collection_models() +
    search + catalog lookup, p50 over ``--probe-runs`` (default 20), with a per-part breakdown.

Results: a table on stdout and JSON in benchmarks/results/search_latency.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DEFAULT_LFW,
    RESULTS_DIR,
    CpuWatch,
    image_files,
    loadavg,
    machine,
    models_dir,
    percentiles,
    require_dir,
    spread,
    table,
    write_json,
)

DIM = 192
SAMPLES_PER_IDENTITY = 5
TARGET_SAME_COSINE = 0.7
SIGMA = float(np.sqrt((1 / TARGET_SAME_COSINE - 1) / DIM))
K = 10
WARMUP = 20


def normalise(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


# ----- gallery ----------------------------------------------------------------------------------
def probe_pair(all_photos: list[Path]) -> tuple[Path, Path]:
    """The first person (sorted) with at least two photos: (gallery photo, probe photo)."""
    by_person: dict[str, list[Path]] = defaultdict(list)
    for p in all_photos:
        by_person[p.parent.name].append(p)
    for person in sorted(by_person):
        if len(by_person[person]) >= 2:
            return by_person[person][0], by_person[person][1]
    raise SystemExit("error: no LFW person with two photos to use as a probe")


def real_faces(lfw: Path, count: int, models: Path, npz: Path, gallery_photo: Path, probe: Path) -> dict:
    """Real embeddings plus per-face metadata (thumbnail, box, landmarks, quality) for the catalog.

    From ``npz`` when it exists (its ``names``, LFW-relative paths, become the faces' sources;
    the probe photo itself is left out so that the probe has to find the person's other photos),
    else from ``count`` LFW photos embedded here. A few photos are always run through the
    pipeline for realistic thumbnails, boxes and landmarks.
    """
    from facefinder.vision.image import encode_jpeg, read_image
    from facefinder.vision.pipeline import FacePipeline

    pipeline = FacePipeline.default(models, threads=os.cpu_count() or 1)
    photos = [gallery_photo] + [p for p in spread(image_files(lfw), count) if p not in (gallery_photo, probe)]
    if npz.is_file():
        photos = photos[:32]
    started = time.perf_counter()
    vectors, meta, sources = [], [], []
    for i in range(0, len(photos), 8):
        chunk = photos[i : i + 8]
        for path, faces in zip(chunk, pipeline.analyze([read_image(str(p)) for p in chunk])):
            for f in faces:
                vectors.append(f.embedding)
                sources.append(str(path))
                meta.append(
                    {
                        "box": [round(float(v), 2) for v in f.box],
                        "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in f.landmarks],
                        "detector_score": round(f.score, 4),
                        "quality": round(f.quality.score, 4),
                        "quality_parts": f.quality.as_dict(),
                        "thumbnail": encode_jpeg(f.aligned),
                    }
                )
    seconds = time.perf_counter() - started
    embeddings = np.stack(vectors).astype(np.float32)
    source = f"{len(photos)} LFW photos embedded here ({len(embeddings)} faces, {seconds:.1f} s)"
    if npz.is_file():
        data = np.load(npz)
        raw = data["embeddings"].astype(np.float32)
        usable = np.isfinite(raw).all(axis=1) & (np.linalg.norm(raw, axis=1) > 1e-6)  # zero rows = no face
        loaded = normalise(raw[usable])
        if "names" in data.files:
            names = [str(n) for n, ok in zip(data["names"], usable) if ok]
            probe_name = probe.relative_to(lfw).as_posix()
            keep = [i for i, n in enumerate(names) if n != probe_name]
            embeddings, sources = loaded[keep], [str(lfw / names[i]) for i in keep]
            source = (
                f"{npz} ({len(raw)} embeddings, {int((~usable).sum())} empty rows and the probe photo's own left out)"
            )
        else:  # anonymous vectors: put the gallery photo's own embedding first so the probe can find it
            embeddings = np.concatenate([embeddings[:1], loaded])
            sources = sources[:1] + [f"{npz.name}#{i}" for i in range(len(loaded))]
            source = f"{npz} ({len(loaded)} usable embeddings) + the gallery photo embedded here"
    return {"embeddings": embeddings, "sources": sources, "meta": meta, "source": source, "model_id": pipeline.model_id}


def synthetic(count: int, rng: np.random.Generator, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``count`` face-like unit vectors, 5 per identity; returns (vectors, identity centres).
    ``out`` (count x DIM float32) receives them in place: at 10M faces a copy is 7.7 GB."""
    identities = -(-count // SAMPLES_PER_IDENTITY)
    centres = normalise(rng.standard_normal((identities, DIM), dtype=np.float32))
    vectors = out if out is not None else np.empty((count, DIM), dtype=np.float32)
    for s in range(SAMPLES_PER_IDENTITY):  # sample s of every identity, in place: no big temporaries
        rows = len(range(s, count, SAMPLES_PER_IDENTITY))
        block = centres[:rows] + SIGMA * rng.standard_normal((rows, DIM), dtype=np.float32)
        vectors[s::SAMPLES_PER_IDENTITY] = normalise(block)
    return vectors, centres


def cosine_stats(vectors: np.ndarray, rng: np.random.Generator, real: np.ndarray) -> dict:
    """Same-identity and different-identity cosines of the synthetic vectors, and real impostor pairs."""
    n = len(vectors) // SAMPLES_PER_IDENTITY
    ids = rng.choice(n, size=min(n, 2000), replace=False)
    same = np.einsum("ij,ij->i", vectors[ids * 5], vectors[ids * 5 + 1])
    other = rng.permutation(ids)
    diff = np.einsum("ij,ij->i", vectors[ids * 5], vectors[other * 5 + 2])[ids != other]
    a, b = rng.integers(0, len(real), 2000), rng.integers(0, len(real), 2000)
    real_pairs = np.einsum("ij,ij->i", real[a], real[b])[a != b]
    return {
        "sigma": round(SIGMA, 5),
        "synthetic_same_identity_cos": {"mean": round(float(same.mean()), 4), "std": round(float(same.std()), 4)},
        "synthetic_different_identity_cos": {"mean": round(float(diff.mean()), 4), "std": round(float(diff.std()), 4)},
        "real_random_pairs_cos": {
            "mean": round(float(real_pairs.mean()), 4),
            "std": round(float(real_pairs.std()), 4),
            "note": "mostly different people",
        },
    }


def make_queries(centres: np.ndarray, real: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    half = count // 2 if len(centres) else 0
    synthetic_q = normalise(
        centres[rng.integers(0, len(centres), half)] + SIGMA * rng.standard_normal((half, DIM), dtype=np.float32)
    )
    real_q = normalise(
        real[rng.integers(0, len(real), count - half)]
        + 0.02 * rng.standard_normal((count - half, DIM), dtype=np.float32)
    )
    return rng.permutation(np.concatenate([synthetic_q, real_q]))


# ----- measurements -----------------------------------------------------------------------------
def time_calls(fn, queries: np.ndarray) -> list[float]:
    for q in queries[:WARMUP]:
        fn(q)
    samples = []
    for q in queries:
        s = time.perf_counter()
        fn(q)
        samples.append(time.perf_counter() - s)
    return samples


def raw_index(vectors: np.ndarray, queries: np.ndarray) -> dict:
    import faiss

    from facefinder.storage.index import VectorIndex

    index = VectorIndex(DIM)
    s = time.perf_counter()
    index.add(np.arange(1, len(vectors) + 1), vectors)
    add_s = time.perf_counter() - s
    default_threads = faiss.omp_get_max_threads()
    out = {"add_all_s": round(add_s, 3), "faiss_default_threads": default_threads}
    try:
        for label, threads in (("default_threads", default_threads), ("one_thread", 1)):
            faiss.omp_set_num_threads(threads)
            out[label] = percentiles(time_calls(lambda q: index.search(q[None], K), queries))
        faiss.omp_set_num_threads(default_threads)
        s = time.perf_counter()
        index.search(queries, K)
        batch = time.perf_counter() - s
        out["batched"] = {
            "queries": len(queries),
            "total_ms": round(batch * 1e3, 3),
            "ms_per_query": round(batch * 1e3 / len(queries), 4),
        }
    finally:
        faiss.omp_set_num_threads(default_threads)
    return out


def fill_store(data: Path, vectors: np.ndarray, real: dict, rng: np.random.Generator) -> tuple:
    """A FaceStore whose catalog holds every vector as a face of its own 1-face image."""
    from sqlalchemy import insert

    from facefinder.storage.catalog import FaceRecord, ImageRecord, JournalEntry
    from facefinder.storage.store import FaceStore

    timings = {}
    s = time.perf_counter()
    store = FaceStore(data)
    coll = store.collection(
        "gallery", create=True, purpose="benchmark", legal_basis="LFW research set", retention_days=1
    )
    store.set_model(coll.id, real["model_id"])
    meta, sources = real["meta"], real["sources"]
    chunk = 5000
    with store.catalog.session() as session, session.begin():
        for start in range(0, len(vectors), chunk):
            stop = min(start + chunk, len(vectors))
            images, faces, journal = [], [], []
            for i in range(start, stop):
                m = meta[i % len(meta)]
                ident = i + 1
                src = sources[i] if i < len(sources) else f"synthetic/{(i - len(sources)) // 5:07d}/{i:08d}.jpg"
                images.append(
                    {
                        "id": ident,
                        "collection_id": coll.id,
                        "sha256": f"{ident:064x}",
                        "source": src,
                        "width": 250,
                        "height": 250,
                        "case_id": "bench",
                    }
                )
                faces.append(
                    {
                        "id": ident,
                        "image_id": ident,
                        "collection_id": coll.id,
                        "box": m["box"],
                        "landmarks": m["landmarks"],
                        "detector_score": m["detector_score"],
                        "quality": m["quality"],
                        "quality_parts": m["quality_parts"],
                        "model_id": real["model_id"],
                        "embedding": vectors[i].tobytes(),
                        "thumbnail": m["thumbnail"],
                    }
                )
                journal.append({"collection_id": coll.id, "face_id": ident, "op": "add"})
            session.execute(insert(ImageRecord), images)
            session.execute(insert(FaceRecord), faces)
            session.execute(insert(JournalEntry), journal)
    timings["bulk_insert_s"] = time.perf_counter() - s
    s = time.perf_counter()
    store.reload()  # no checkpoint yet: rebuilds the index from the catalog's embeddings
    timings["reload_rebuild_s"] = time.perf_counter() - s
    s = time.perf_counter()
    store.checkpoint()
    timings["checkpoint_s"] = time.perf_counter() - s
    store.catalog.close()
    s = time.perf_counter()
    store = FaceStore(data)  # what every CLI call / FaceFinder() pays: load the checkpoint
    timings["open_from_checkpoint_s"] = time.perf_counter() - s
    assert store.index_size(coll.id) == len(vectors), (store.index_size(coll.id), len(vectors))
    timings["catalog_mb"] = sum(f.stat().st_size for f in data.rglob("*") if f.is_file()) / 2**20
    return store, coll.id, {k: round(v, 3) for k, v in timings.items()}


def store_level(store, cid: int, queries: np.ndarray) -> dict:
    """FaceStore.search + FaceStore.faces per query, with FAISS's default threads and with 1 thread."""
    import faiss

    default_threads = faiss.omp_get_max_threads()
    out: dict = {}
    try:
        for label, threads in (("default_threads", default_threads), ("one_thread", 1)):
            faiss.omp_set_num_threads(threads)
            parts: dict[str, list[float]] = defaultdict(list)
            found = []

            def one(q: np.ndarray, record: bool) -> None:
                t0 = time.perf_counter()
                hits = store.search([cid], q[None], K)
                t1 = time.perf_counter()
                rows = store.faces([fid for row in hits for fid, _ in row])
                t2 = time.perf_counter()
                if record:
                    parts["search_plus_faces"].append(t2 - t0)
                    parts["FaceStore.search"].append(t1 - t0)
                    parts["FaceStore.faces"].append(t2 - t1)
                    found.append(len(rows))

            for q in queries[:WARMUP]:
                one(q, False)
            for q in queries:
                one(q, True)
            # the parts of FaceStore.search: the journal refresh it runs first, then the index itself
            parts["refresh()"] = time_calls(lambda q: store.refresh(), queries[:200])
            index = store.indexes[cid]
            parts["index.search"] = time_calls(lambda q: index.search(q[None], K), queries[:200])
            out[label] = {name: percentiles(samples) for name, samples in parts.items()}
            out[label]["catalog_rows_per_query"] = float(np.mean(found))
    finally:
        faiss.omp_set_num_threads(default_threads)
    return out


def add_image_cost(store, cid: int, real: dict, model_id: str, rng: np.random.Generator, count: int = 30) -> dict:
    """The per-photo write an ingest does (catalog transaction + index refresh), at this size."""
    from facefinder.storage.store import NewFace, NewImage

    m = real["meta"][0]
    samples = []
    base = 10**12
    for i in range(count):
        face = NewFace(
            box=m["box"],
            landmarks=m["landmarks"],
            detector_score=m["detector_score"],
            quality=m["quality"],
            quality_parts=m["quality_parts"],
            embedding=normalise(rng.standard_normal(DIM, dtype=np.float32)),
            thumbnail=m["thumbnail"],
        )
        s = time.perf_counter()
        store.add_image(cid, NewImage(f"{base + i:064x}", f"added/{i}.jpg", 250, 250), [face], model_id)
        samples.append(time.perf_counter() - s)
    return percentiles(samples)


def end_to_end(data: Path, models: Path, probe: Path, gallery_photo: Path, runs: int) -> dict:
    import faiss

    from facefinder import FaceFinder
    from facefinder.vision.image import decode_image

    default_threads = faiss.omp_get_max_threads()
    s = time.perf_counter()
    ff = FaceFinder(data, models_dir=models)
    open_s = time.perf_counter() - s
    s = time.perf_counter()
    ff.pipeline  # noqa: B018 - load the models once, as a long-lived FaceFinder would
    models_s = time.perf_counter() - s
    samples = []
    result = None
    for i in range(runs + 2):
        s = time.perf_counter()
        result = ff.search(probe, top_k=K)
        if i >= 2:
            samples.append(time.perf_counter() - s)
    # the same steps one by one, to see which part of the search costs what
    parts: dict[str, list[float]] = defaultdict(list)
    blob = probe.read_bytes()
    cid = ff.store.collection("gallery").id
    for _ in range(runs):
        t0 = time.perf_counter()
        image = decode_image(blob, str(probe))
        t1 = time.perf_counter()
        faces = ff.pipeline.analyze([image])[0]
        t2 = time.perf_counter()
        ff.store.collection_models()
        t3 = time.perf_counter()
        hits = ff.store.search([cid], np.stack([f.embedding for f in faces]), K)
        t4 = time.perf_counter()
        ff.store.faces([fid for row in hits for fid, _ in row])
        t5 = time.perf_counter()
        for name, value in (
            ("decode", t1 - t0),
            ("detect+landmarks+embed", t2 - t1),
            ("store.collection_models()", t3 - t2),
            ("store.search", t4 - t3),
            ("store.faces", t5 - t4),
        ):
            parts[name].append(value)
        # the same search right after the pipeline, FAISS limited to 1 thread: onnxruntime's
        # intra-op threads are still spinning after analyze() and fight FAISS's OpenMP threads
        ff.pipeline.analyze([image])
        faiss.omp_set_num_threads(1)
        t6 = time.perf_counter()
        ff.store.search([cid], np.stack([f.embedding for f in faces]), K)
        parts["(store.search with 1 FAISS thread)"].append(time.perf_counter() - t6)
        faiss.omp_set_num_threads(default_threads)
    top = result[0].candidates[0] if result and result[0].candidates else None
    ff.store.catalog.close()
    return {
        "probe": str(probe),
        "open_store_s": round(open_s, 3),
        "load_models_s": round(models_s, 3),
        "FaceFinder.search": percentiles(samples),
        "parts_p50_ms": {k: percentiles(v)["p50_ms"] for k, v in parts.items()},
        "faces_in_probe": len(result),
        "top_candidate": None
        if top is None
        else {
            "source": top.source,
            "score": top.score,
            "band": top.band,
            "same_person_as_probe": Path(top.source).parent.name == probe.parent.name,
            "is_gallery_photo": Path(top.source).resolve() == gallery_photo.resolve(),
        },
        "candidates_above_threshold": len(result[0].candidates) if result else 0,
    }


# ----- main --------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="gallery sizes in faces (default 10000,100000)")
    parser.add_argument("--queries", type=int, default=500, help="single-query calls per measurement (>= 200)")
    parser.add_argument("--probe-runs", type=int, default=20, help="FaceFinder.search runs per size")
    parser.add_argument("--real", type=int, default=300, help="LFW photos to embed when no embeddings file exists")
    parser.add_argument(
        "--embeddings",
        type=Path,
        default=RESULTS_DIR / "lfw_embeddings.npz",
        help="real embeddings (.npz with key 'embeddings'), used when present",
    )
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW, help=f"LFW images folder (default {DEFAULT_LFW})")
    parser.add_argument(
        "--models", default=None, help="models dir (default $FACEFINDER_MODELS_DIR or ~/.facefinder/models)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/search_latency.json)")
    args = parser.parse_args()
    if args.queries < 200:
        parser.error("--queries: at least 200, so that p99 means something")

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    lfw = require_dir(
        args.lfw.expanduser().resolve(),
        "LFW images folder",
        "Pass --lfw DIR (the folder of per-person subfolders from lfw.tgz).",
    )
    models = models_dir(args.models)
    from facefinder.vision.models import require_models

    require_models(models)
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, python {info['python']}, onnxruntime {info['onnxruntime']}, "
        f"faiss {info['faiss']} ({info.get('faiss_omp_threads')} OpenMP threads), load average {info['loadavg_at_start']}"
    )
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    all_photos = image_files(lfw)
    gallery_photo, probe = probe_pair(all_photos)
    real = real_faces(lfw, args.real, models, args.embeddings, gallery_photo, probe)
    print(f"real embeddings: {real['source']}; probe {probe.name} (gallery holds {gallery_photo.name})")

    results: dict = {
        "machine": info,
        "k": K,
        "queries": args.queries,
        "real_embeddings": real["source"],
        "synthetic": {
            "identities": "N/5",
            "samples_per_identity": SAMPLES_PER_IDENTITY,
            "rule": "normalise(centre + N(0, sigma^2 I)), centres uniform on the unit sphere",
        },
        "sizes": {},
    }
    scratch = Path(tempfile.mkdtemp(prefix="ff-search-"))
    summary = []
    try:
        for n in sizes:
            n_real = min(len(real["embeddings"]), n)
            fake, centres = synthetic(n - n_real, rng)
            vectors = np.concatenate([real["embeddings"][:n_real], fake]) if len(fake) else real["embeddings"][:n]
            if "cosines" not in results["synthetic"] and len(fake) >= 10 * SAMPLES_PER_IDENTITY:
                results["synthetic"]["cosines"] = cosine_stats(fake, rng, real["embeddings"])
            queries = make_queries(centres, real["embeddings"], args.queries, rng)
            print(f"\n== N = {n:,} faces ({n_real} real, {len(fake):,} synthetic) ==")
            entry: dict = {"faces": n, "real": n_real, "synthetic": len(fake)}

            contention = {}
            with CpuWatch() as watch:
                entry["raw_index"] = raw_index(vectors, queries)
            contention["raw_index"] = watch.result
            data = scratch / f"store-{n}"
            store, cid, load = fill_store(data, vectors, real, rng)
            entry["store_load"] = load
            print(
                f"catalog load (not the metric): bulk insert {load['bulk_insert_s']} s, rebuild index "
                f"{load['reload_rebuild_s']} s, checkpoint {load['checkpoint_s']} s, reopen "
                f"{load['open_from_checkpoint_s']} s, {load['catalog_mb']:.0f} MB on disk"
            )
            with CpuWatch() as watch:
                entry["store_level"] = store_level(store, cid, queries)
                entry["add_image_one_face"] = add_image_cost(store, cid, real, real["model_id"], rng)
            contention["store_level"] = watch.result
            store.close()
            with CpuWatch() as watch:
                entry["end_to_end"] = end_to_end(data, models, probe, gallery_photo, args.probe_runs)
            contention["end_to_end"] = watch.result
            entry["contention"] = contention
            shutil.rmtree(data, ignore_errors=True)
            results["sizes"][str(n)] = entry

            raw, st, e2e = entry["raw_index"], entry["store_level"], entry["end_to_end"]
            sd, s1 = st["default_threads"], st["one_thread"]
            rows = [
                (
                    f"VectorIndex.search, 1 query, {raw['faiss_default_threads']} FAISS threads (default)",
                    raw["default_threads"],
                ),
                ("VectorIndex.search, 1 query, 1 FAISS thread", raw["one_thread"]),
                ("FaceStore.search + FaceStore.faces (default threads)", sd["search_plus_faces"]),
                ("  FaceStore.search", sd["FaceStore.search"]),
                ("    its refresh() (journal query)", sd["refresh()"]),
                ("    its index.search", sd["index.search"]),
                ("  FaceStore.faces (catalog rows of the hits)", sd["FaceStore.faces"]),
                ("FaceStore.search + FaceStore.faces (1 FAISS thread)", s1["search_plus_faces"]),
                ("FaceStore.add_image, 1-face photo", entry["add_image_one_face"]),
                ("FaceFinder.search(probe photo), end to end", e2e["FaceFinder.search"]),
            ]
            print(
                table(
                    [(name, p["n"], p["p50_ms"], p["p90_ms"], p["p99_ms"], p["mean_ms"]) for name, p in rows],
                    ("measurement (ms)", "n", "p50", "p90", "p99", "mean"),
                )
            )
            print(
                f"batched: {raw['batched']['queries']} queries in one call {raw['batched']['total_ms']} ms "
                f"({raw['batched']['ms_per_query']} ms/query); index add of all {n:,} vectors {raw['add_all_s']} s"
            )
            print("end-to-end parts, p50 ms: " + ", ".join(f"{k} {v}" for k, v in e2e["parts_p50_ms"].items()))
            print(
                "CPU taken by OTHER processes during (a) / (b) / (c): "
                + " / ".join(f"{c['other_processes_share_pct']}%" for c in contention.values())
                + " of the machine (0% = uncontended; FAISS's multi-threaded calls suffer most)"
            )
            top = e2e["top_candidate"]
            print(
                f"probe: {e2e['faces_in_probe']} face(s); top candidate "
                + (
                    "none"
                    if top is None
                    else f"{Path(top['source']).name} score {top['score']} (same person: {top['same_person_as_probe']})"
                )
            )
            summary.append(
                (
                    f"{n:,}",
                    raw["default_threads"]["p50_ms"],
                    raw["default_threads"]["p99_ms"],
                    raw["one_thread"]["p50_ms"],
                    raw["one_thread"]["p99_ms"],
                    sd["search_plus_faces"]["p50_ms"],
                    sd["search_plus_faces"]["p99_ms"],
                    s1["search_plus_faces"]["p50_ms"],
                    s1["search_plus_faces"]["p99_ms"],
                    e2e["FaceFinder.search"]["p50_ms"],
                )
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    if "cosines" in results["synthetic"]:
        c = results["synthetic"]["cosines"]
        print(
            f"\nsynthetic vectors: sigma {c['sigma']}, same-identity cos {c['synthetic_same_identity_cos']['mean']} "
            f"+- {c['synthetic_same_identity_cos']['std']}, different {c['synthetic_different_identity_cos']['mean']} "
            f"+- {c['synthetic_different_identity_cos']['std']}; real random pairs {c['real_random_pairs_cos']['mean']} "
            f"+- {c['real_random_pairs_cos']['std']}"
        )
    print("\nsummary (ms):")
    print(
        table(
            summary,
            (
                "faces",
                "index p50",
                "index p99",
                "index 1T p50",
                "index 1T p99",
                "store p50",
                "store p99",
                "store 1T p50",
                "store 1T p99",
                "probe e2e p50",
            ),
        )
    )
    print(
        "(index = VectorIndex.search; store = FaceStore.search + FaceStore.faces; 1T = FAISS limited to 1 thread;"
        " probe e2e = FaceFinder.search of a photo, default settings)"
    )
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    results["machine"]["loadavg_at_end"] = loadavg()
    path = write_json("search_latency.json", results, args.out)
    print(f"\nwrote {path} in {results['total_seconds']} s")


if __name__ == "__main__":
    main()
