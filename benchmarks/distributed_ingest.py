"""Distributed ingest: the same LFW photos ingested locally and on a (local) Ray cluster.

    python benchmarks/distributed_ingest.py                       # 1,000 photos, SQLite + FAISS
    python benchmarks/distributed_ingest.py --database-url postgresql+psycopg://... \\
        --vectors milvus://127.0.0.1:19530/bench                 # the Ray run writes to PostgreSQL + Milvus

Per run: photos/s over the whole ingest (Ray start-up and actor model loading included), and the
driver's write cost per photo (``IngestReport.stage_seconds["store"]``: catalog transaction + vector
index update), which bounds how many photos one driver can take in however many actors analyze.
On one machine Ray cannot be faster than the local process pool (same cores); what this measures is
its overhead, and whether the driver's writes keep up. Results: benchmarks/results/distributed_ingest.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_LFW, image_files, loadavg, machine, spread, table, write_json  # noqa: E402
from throughput import link_subset  # noqa: E402


def run(folder: Path, label: str, workers: int, ray: str | None, catalog_url: str | None, vectors: str | None) -> dict:
    from facefinder import FaceFinder
    from facefinder.config import data_dir, models_dir

    data = Path(tempfile.mkdtemp(prefix=f"ff-dist-{label}-"))
    ff = FaceFinder(data, models_dir=models_dir(data_dir()), workers=workers, catalog_url=catalog_url, vectors=vectors)
    started = time.perf_counter()
    report = ff.ingest(
        folder,
        collection=f"bench{int(started)}",
        purpose="benchmark",
        legal_basis="LFW research set",
        retention_days=1,
        ray=ray,
    )
    wall = time.perf_counter() - started
    ff.close()
    shutil.rmtree(data, ignore_errors=True)
    return {
        "label": label,
        "workers": workers,
        "ray": ray,
        "catalog": "postgresql" if catalog_url else "sqlite",
        "vectors": "milvus" if vectors else "faiss",
        "ingested": report.ingested,
        "faces": report.faces,
        "seconds": round(wall, 2),
        "photos_per_s": round(report.ingested / wall, 1),
        "store_ms_per_photo": round(report.stage_seconds["store"] / max(report.ingested, 1) * 1e3, 2),
        "failures": len(report.failures),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=DEFAULT_LFW)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default=None, help="PostgreSQL catalog for the last Ray run")
    parser.add_argument("--vectors", default=None, help="milvus://host:port/namespace for the last Ray run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    info = machine()
    folder = Path(tempfile.mkdtemp(prefix="ff-dist-photos-"))
    link_subset(spread(image_files(args.lfw), args.limit), args.lfw, folder)
    runs = [run(folder, "local", args.workers, None, None, None), run(folder, "ray", args.workers, "local", None, None)]
    if args.database_url or args.vectors:
        runs.append(run(folder, "ray-pg-milvus", args.workers, "local", args.database_url, args.vectors))
    shutil.rmtree(folder, ignore_errors=True)
    info["loadavg_at_end"] = loadavg()
    path = write_json("distributed_ingest.json", {"machine": info, "photos": args.limit, "runs": runs}, args.out)
    print(
        table(
            [
                (
                    r["label"],
                    r["catalog"],
                    r["vectors"],
                    r["workers"],
                    r["ingested"],
                    r["seconds"],
                    r["photos_per_s"],
                    r["store_ms_per_photo"],
                )
                for r in runs
            ],
            ("run", "catalog", "vectors", "workers", "photos", "s", "photos/s", "driver write ms/photo"),
        )
    )
    print(
        f"\nmachine: {info['cpu']}, {info['cores']} cores; load {info['loadavg_at_start']} -> {info['loadavg_at_end']}"
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
