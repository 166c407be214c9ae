"""Sign-in timing by outcome: does the answer's time tell which usernames exist? (issue 11, finding 8)

Times POST /api/session on the real app (a fresh SQLite catalog, argon2-cffi's default cost, as served)
for four kinds of attempt, interleaved round by round so that machine noise hits them alike: an
unknown username, a disabled account, a known username with a wrong password, and a right password.
Before the fix, unknown and disabled usernames answered in a few ms and known ones after an argon2
check (hundreds of ms); now all four run one argon2 check.

    .venv/bin/python benchmarks/login_timing.py              # 20 rounds
    .venv/bin/python benchmarks/login_timing.py --rounds 50

Output: a table, and benchmarks/results/login_timing.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import RESULTS_DIR, machine, percentiles
from fastapi.testclient import TestClient

from facefinder.interfaces.http.app import ServiceConfig, create_app
from facefinder.services.server.accounts import Principal

PASSWORD = "the-right-password"
ATTEMPTS = {  # kind -> (username, password)
    "unknown user": ("nobody-here", "a-wrong-password"),
    "disabled user": ("gone", PASSWORD),
    "wrong password": ("known", "a-wrong-password"),
    "right password": ("known", PASSWORD),
}


def measure(rounds: int) -> dict[str, dict]:
    """Per kind of attempt: its status code and the percentiles of its answer time."""
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(Path(folder) / "data", config=ServiceConfig(login_rate=(1_000_000, 60.0)))
        accounts = app.state.service.accounts
        accounts.add_user("known", PASSWORD, "investigator")
        accounts.add_user("gone", PASSWORD, "investigator")
        accounts.set_active(Principal(0, "benchmark", "admin"), "gone", False)
        samples: dict[str, list[float]] = {kind: [] for kind in ATTEMPTS}
        statuses: dict[str, set[int]] = {kind: set() for kind in ATTEMPTS}
        with TestClient(app) as client:
            for _ in range(rounds + 1):  # the first round warms up and is dropped
                for kind, (username, password) in ATTEMPTS.items():
                    started = time.perf_counter()
                    response = client.post("/api/session", json={"username": username, "password": password})
                    samples[kind].append(time.perf_counter() - started)
                    statuses[kind].add(response.status_code)
                    client.cookies.clear()
        return {kind: {"status": sorted(statuses[kind]), **percentiles(samples[kind][1:])} for kind in ATTEMPTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="attempts of each kind (default 20)")
    args = parser.parse_args()
    results = measure(args.rounds)
    print(f"{'attempt':<16} {'status':>7} {'p50 ms':>9} {'p90 ms':>9} {'min ms':>9} {'max ms':>9}")
    for kind, r in results.items():
        status = ",".join(map(str, r["status"]))
        print(f"{kind:<16} {status:>7} {r['p50_ms']:>9.1f} {r['p90_ms']:>9.1f} {r['min_ms']:>9.1f} {r['max_ms']:>9.1f}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "login_timing.json"
    out.write_text(json.dumps({"machine": machine(), "rounds": args.rounds, "results": results}, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
