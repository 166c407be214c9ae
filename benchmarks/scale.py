"""Scale: the FAISS index tiers (flat, HNSW, IVF-PQ + exact re-rank) at 100k and 1M faces.

    python benchmarks/scale.py                                  # --sizes 100000,1000000
    python benchmarks/scale.py --sizes 100000 --tiers flat,hnsw,ivfpq
    python benchmarks/scale.py --sizes 10000000 --tiers ivfpq   # 10M
    python benchmarks/scale.py --sizes 100000 --tiers none --milvus milvus://127.0.0.1:19530

The gallery is N faces: every LFW embedding from ``benchmarks/results/lfw_embeddings.npz`` (keys
``embeddings``, ``names``; all-zero rows, photos with no face, skipped) except the held-out
queries, filled up to N with the synthetic face-like vectors of search_latency.py: N/5 identity
centres uniform on the 192-d unit sphere, 5 samples each, ``normalise(centre + N(0, sigma^2 I))``
with sigma = sqrt((1/0.7 - 1)/192) ~= 0.047 (same identity cosine ~0.70, different ~0.00 +- 0.07;
the measured figures are in the JSON). So the real LFW mates must be found among N - 13k
distractors.

Queries (``--queries``, default 400, single-query calls on 1 thread, k = 10, after 20 warm-up
calls): half fresh samples of synthetic identities (mates: that identity's 5 gallery faces), half
held-out LFW photos of people with at least two photos (mates: their other photos, in the gallery).

Per tier and N: build time (``VectorIndex.add`` of all N, IVF training included), RAM per face
(the FAISS structure as serialised plus the 8-byte row -> face id array; the full-precision
vectors of the HNSW/IVF-PQ tiers are a memory-mapped file, not counted), disk (index file +
vector file), p50 / p99 latency of ``VectorIndex.search`` on the index reloaded from disk, QPS
(1 / mean latency, one stream), mate-recall@10 (of the query's same-identity faces that exact
search puts in the top 10, the share this tier puts there too; synthetic and real separately),
insert rate (20k new faces added to the built index) and the time to remove 100 faces.

Results: a table on stdout and JSON in benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, CpuWatch, loadavg, machine, percentiles, table, write_json  # noqa: E402
from search_latency import DIM, SAMPLES_PER_IDENTITY, SIGMA, normalise, synthetic  # noqa: E402

K = 10
WARMUP = 20
INSERTS = 20_000


def lfw_real(npz: Path) -> tuple[np.ndarray, np.ndarray]:
    if not npz.is_file():  # made by the accuracy benchmark (every LFW photo embedded once, ~10 min on 2 cores)
        sys.exit(
            f"error: {npz} not found: the real LFW embeddings come from the accuracy benchmark.\n"
            f"Run first: .venv/bin/python benchmarks/accuracy.py   (or pass --lfw-npz FILE)"
        )
    data = np.load(npz, allow_pickle=True)
    vectors = np.asarray(data["embeddings"], np.float32)
    people = np.array([str(n).split("/")[0] for n in data["names"]])
    keep = np.abs(vectors).sum(axis=1) > 0
    return normalise(vectors[keep]), people[keep]


def gallery(n: int, real: np.ndarray, people: np.ndarray, queries: int, rng: np.random.Generator) -> dict:
    """Gallery vectors (real first, then synthetic), query vectors and each query's mate rows."""
    names, first = np.unique(people, return_index=True)
    counts = np.bincount(np.searchsorted(names, people))
    multi = [i for i in range(len(names)) if counts[i] >= 2]
    picked = rng.choice(multi, size=min(queries // 2, len(multi)), replace=False)
    held = np.sort(first[picked])  # the first photo of each picked person is a query, not in the gallery
    keep = np.setdiff1d(np.arange(len(real)), held)
    real_gallery, real_people = real[keep], people[keep]
    n_syn = n - len(real_gallery)
    vectors = np.empty((n, DIM), dtype=np.float32)  # filled in place: no second copy at 10M
    vectors[: len(real_gallery)] = real_gallery
    _, centres = synthetic(n_syn, rng, out=vectors[len(real_gallery) :])
    query_vectors, mates = [], []
    for row in held:
        query_vectors.append(real[row])
        mates.append(np.nonzero(real_people == people[row])[0])
    n_id = n_syn // SAMPLES_PER_IDENTITY
    for ident in rng.integers(0, n_id, queries - len(held)):
        query_vectors.append(normalise(centres[ident] + SIGMA * rng.standard_normal(DIM, dtype=np.float32)))
        mates.append(len(real_gallery) + ident * SAMPLES_PER_IDENTITY + np.arange(SAMPLES_PER_IDENTITY))
    kinds = ["real"] * len(held) + ["synthetic"] * (queries - len(held))
    same = np.einsum(
        "ij,ij->i",
        syn_pairs := vectors[len(real_gallery) :][: 5 * min(n_id, 2000) : 5],
        vectors[len(real_gallery) :][1 : 5 * min(n_id, 2000) : 5],
    )
    other = np.einsum("ij,ij->i", syn_pairs, np.roll(syn_pairs, 1, axis=0))
    stats = {
        "synthetic_same_identity_cos": [round(float(same.mean()), 4), round(float(same.std()), 4)],
        "synthetic_different_identity_cos": [round(float(other.mean()), 4), round(float(other.std()), 4)],
        "real_faces": int(len(real_gallery)),
        "real_queries": int(len(held)),
        "synthetic": int(n_syn),
    }
    return {
        "vectors": vectors,
        "queries": np.stack(query_vectors).astype(np.float32),
        "mates": mates,
        "kinds": kinds,
        "stats": stats,
    }


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Exact top-k rows per query, by brute force in blocks (the ground truth)."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for start in range(0, len(vectors), 200_000):
        scores = queries @ vectors[start : start + 200_000].T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        s = np.take_along_axis(scores, top, axis=1)
        all_s, all_i = np.concatenate([best_s, s], 1), np.concatenate([best_i, top + start], 1)
        order = np.argsort(-all_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, order, 1), np.take_along_axis(all_i, order, 1)
    return best_i


def mate_recall(found: list[np.ndarray], truth: np.ndarray, mates: list[np.ndarray], kinds: list[str]) -> dict:
    out = {}
    for kind in ("real", "synthetic", "all"):
        hit = total = overlap = 0
        for q, row in enumerate(found):
            if kind != "all" and kinds[q] != kind:
                continue
            exact_mates = set(truth[q]) & set(mates[q])
            hit += len(exact_mates & set(row))
            total += len(exact_mates)
            overlap += len(set(truth[q]) & set(row))
        out[kind] = round(hit / total, 4) if total else None
    out["plain_recall_at_10"] = round(sum(len(set(truth[q]) & set(r)) for q, r in enumerate(found)) / truth.size, 4)
    return out


def timed_queries(index, data: dict, truth: np.ndarray) -> tuple[dict, dict, CpuWatch]:
    """Latency percentiles, mate-recall@10 and CPU of single top-K queries (after WARMUP calls)."""
    queries = data["queries"]
    for q in queries[:WARMUP]:
        index.search(q[None], K)
    times, found = [], []
    with CpuWatch() as search_cpu:
        for q in queries:
            t0 = time.perf_counter()
            _, got = index.search(q[None], K)
            times.append(time.perf_counter() - t0)
            found.append(got[0] - 1)  # face id = row + 1: back to rows
    return percentiles(times), mate_recall(found, truth, data["mates"], data["kinds"]), search_cpu


def dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def run_tier(
    tier: str,
    data: dict,
    truth: np.ndarray,
    workdir: Path,
    rng: np.random.Generator,
    nprobe_fractions: list[float],
    rerank: list[int],
) -> list[dict]:
    import faiss

    from facefinder.storage import index as tiers
    from facefinder.storage.index import VectorIndex

    vectors = data["vectors"]
    n = len(vectors)
    ids = np.arange(1, n + 1, dtype=np.int64)  # face id = row + 1
    os.environ["FACEFINDER_INDEX_TIER"] = tier  # measure this tier, whatever the size would choose
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    with CpuWatch() as build_cpu:
        index = VectorIndex(DIM, tier=tier)
        index.add(ids, vectors)
    build_s = build_cpu.result["wall_s"]
    inner = len(faiss.serialize_index(index.index)) if index.index is not None else 0
    ram = inner + (8 * index.nrows if tier != "flat" else 0)
    path = workdir / f"{tier}-{n}.faiss"
    t0 = time.perf_counter()
    index.save(path)
    save_s = time.perf_counter() - t0
    disk = sum(p.stat().st_size for p in workdir.glob(f"{tier}-{n}.faiss*"))
    t0 = time.perf_counter()
    index = VectorIndex.load(path)  # searched as a server would: full-precision rows memory-mapped
    load_s = time.perf_counter() - t0
    rows = []
    settings = [(f, r) for f in nprobe_fractions for r in rerank] if tier == "ivfpq" else [(None, None)]
    for fraction, short in settings:
        if fraction is not None:
            tiers.NPROBE_FRACTION, tiers.RERANK = fraction, short
            tiers.EXACT_BELOW = 0
        lat, recall, search_cpu = timed_queries(index, data, truth)
        row = {
            "tier": tier,
            "n": n,
            "build_s": round(build_s, 2),
            "build_cpu": build_cpu.result,
            "ram_bytes_per_face": round(ram / n, 1),
            "disk_bytes_per_face": round(disk / n, 1),
            "save_s": round(save_s, 2),
            "load_s": round(load_s, 2),
            "latency": lat,
            "qps_one_stream": round(1000 / lat["mean_ms"], 1),
            "mate_recall_at_10": recall,
            "search_cpu": search_cpu.result,
        }
        if fraction is not None:
            row.update(nprobe=max(1, int(round(index.index.nlist * fraction))), nlist=index.index.nlist, rerank=short)
        if tier == "hnsw":
            row.update(ef_search=tiers.HNSW_EF_SEARCH, hnsw_m=tiers.HNSW_M, ef_construction=tiers.HNSW_EF_CONSTRUCTION)
        rows.append(row)
        print(
            f"  {tier} n={n} nprobe={row.get('nprobe')} rerank={short}: p50 {lat['p50_ms']} ms p99 {lat['p99_ms']} ms "
            f"mate-recall {recall}",
            flush=True,
        )
    # Inserts into the built index (no rebuild), then removal of 100 faces.
    extra = normalise(rng.standard_normal((INSERTS, DIM), dtype=np.float32))
    t0 = time.perf_counter()
    index.add(np.arange(n + 1, n + 1 + INSERTS, dtype=np.int64), extra)
    insert_s = time.perf_counter() - t0
    doomed = rng.choice(ids, 100, replace=False)
    t0 = time.perf_counter()
    removed = index.remove(doomed)
    remove_s = time.perf_counter() - t0
    for row in rows:
        row.update(
            insert_faces_per_s=round(INSERTS / insert_s), remove_100_ms=round(remove_s * 1e3, 2), removed=removed
        )
    del index
    for p in workdir.glob(f"{tier}-{n}.faiss*"):
        p.unlink()
    return rows


def run_milvus(uri: str, data: dict, truth: np.ndarray, rng: np.random.Generator) -> list[dict]:
    """The Milvus backend (``storage/milvus.py``) as the store uses it: HNSW (M 32, ef = the 128-face
    shortlist), Strong consistency, the shortlist re-scored exactly here. Latency is one client call
    over gRPC to a server on this machine, so it includes the transfer of the shortlist's vectors."""
    from pymilvus import utility

    from facefinder.storage.milvus import MilvusBackend

    vectors = data["vectors"]
    n = len(vectors)
    ids = np.arange(1, n + 1, dtype=np.int64)
    backend = MilvusBackend(f"{uri}/scale{os.getpid()}", catalog=None)
    index = backend.new(1, DIM)
    with CpuWatch() as build_cpu:  # this process only: the server's work shows in wall time
        index.add(ids, vectors)
        index.collection.flush()
        utility.wait_for_index_building_complete(index.collection.name, using=backend.alias)
    build_s = build_cpu.result["wall_s"]
    index.collection.release()
    index.collection.load()
    lat, recall, search_cpu = timed_queries(index, data, truth)
    extra = normalise(rng.standard_normal((INSERTS, DIM), dtype=np.float32))
    t0 = time.perf_counter()
    index.add(np.arange(n + 1, n + 1 + INSERTS, dtype=np.int64), extra)
    insert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    removed = index.remove(rng.choice(ids, 100, replace=False))
    remove_s = time.perf_counter() - t0
    backend.drop(1)
    backend.close()
    row = {
        "tier": "milvus-hnsw",
        "n": n,
        "build_s": round(build_s, 2),
        "build_cpu": build_cpu.result,
        "ram_bytes_per_face": None,
        "disk_bytes_per_face": None,
        "latency": lat,
        "qps_one_stream": round(1000 / lat["mean_ms"], 1),
        "mate_recall_at_10": recall,
        "search_cpu": search_cpu.result,
        "insert_faces_per_s": round(INSERTS / insert_s),
        "remove_100_ms": round(remove_s * 1e3, 2),
        "removed": removed,
        "server": uri,
    }
    print(f"  milvus n={n}: p50 {lat['p50_ms']} ms p99 {lat['p99_ms']} ms mate-recall {recall}", flush=True)
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument(
        "--tiers", default="flat,hnsw,ivfpq", help="comma list of flat,hnsw,ivfpq, or auto (the tier each size gets)"
    )
    parser.add_argument("--flat-max", type=int, default=200_000, help="skip the flat tier above this N (slow)")
    parser.add_argument(
        "--hnsw-max",
        type=int,
        default=300_000,
        help="skip the HNSW tier above this N (its build takes ~1 CPU-ms a face, 1 KB a face of RAM)",
    )
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument(
        "--nprobe-fractions", default="0.25,0.375,0.5", help="IVF-PQ: shares of the lists probed to try"
    )
    parser.add_argument("--rerank", default="128", help="IVF-PQ: shortlist sizes re-ranked exactly, to try")
    parser.add_argument("--lfw-npz", default=str(RESULTS_DIR / "lfw_embeddings.npz"))
    parser.add_argument(
        "--milvus",
        default=None,
        help="also measure the Milvus backend on this server "
        "(milvus://127.0.0.1:19530; start one with .ci/milvus.sh start)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from facefinder.storage import index as tiers

    info = machine()
    real, people = lfw_real(Path(args.lfw_npz))
    rng = np.random.default_rng(0)
    results, stats = [], {}
    for n in [int(s) for s in args.sizes.split(",")]:
        data = gallery(n, real, people, args.queries, rng)
        stats[n] = data["stats"]
        t0 = time.perf_counter()
        truth = exact_top(data["vectors"], data["queries"])
        print(f"N={n}: {data['stats']}; exact ground truth {time.perf_counter() - t0:.1f} s", flush=True)
        chosen = (
            [tiers.tier_for(n)]
            if args.tiers == "auto"
            else [
                t
                for t in args.tiers.split(",")
                if t in tiers.TIERS and not (t == "flat" and n > args.flat_max or t == "hnsw" and n > args.hnsw_max)
            ]
        )
        if args.milvus:
            results += run_milvus(args.milvus, data, truth, rng)
        with tempfile.TemporaryDirectory(prefix="ff-scale-") as tmp:
            for tier in chosen:
                results += run_tier(
                    tier,
                    data,
                    truth,
                    Path(tmp),
                    rng,
                    [float(f) for f in args.nprobe_fractions.split(",")],
                    [int(r) for r in args.rerank.split(",")],
                )
        del data, truth
    info["loadavg_at_end"] = loadavg()
    info["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    payload = {
        "machine": info,
        "k": K,
        "queries": args.queries,
        "gallery": stats,
        "results": results,
        "settings": {"FLAT_MAX": tiers.FLAT_MAX, "HNSW_MAX": tiers.HNSW_MAX, "PQ_M": tiers.PQ_M},
    }
    path = write_json("scale.json", payload, args.out)
    print()
    print(
        table(
            [
                (
                    r["tier"],
                    f"{r['n']:,}",
                    r["build_s"],
                    r["ram_bytes_per_face"],
                    r["disk_bytes_per_face"],
                    r["latency"]["p50_ms"],
                    r["latency"]["p99_ms"],
                    r["qps_one_stream"],
                    r["mate_recall_at_10"]["all"],
                    r["mate_recall_at_10"]["real"],
                    r["mate_recall_at_10"]["synthetic"],
                    r["insert_faces_per_s"],
                    r.get("nprobe", ""),
                    r.get("rerank", ""),
                )
                for r in results
            ],
            (
                "tier",
                "N",
                "build s",
                "RAM B/face",
                "disk B/face",
                "p50 ms",
                "p99 ms",
                "QPS",
                "mate-recall@10",
                "real",
                "synth",
                "insert/s",
                "nprobe",
                "rerank",
            ),
        )
    )
    print(
        f"\nmachine: {info['cpu']}, {info['cores']} cores; load {info['loadavg_at_start']} -> {info['loadavg_at_end']}"
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
