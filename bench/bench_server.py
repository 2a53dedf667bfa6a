"""Leaderboard service benchmark.

1. Load: a fresh deployment seeded with N models (default 500: random measured entries on 1-6
   datasets, 1-5 points each, plus the published entries), served by `elue serve` on loopback;
   C concurrent keep-alive clients (default 50) request the leaderboard page, the SST-2 task page and
   the JSON API in turn for T seconds (default 30), with no think time. Prints p50/p95/p99 latency,
   throughput and the error count. Target: p95 < 100 ms, 0 errors.
2. Scoring: a submission the size of the local SST-2 test set (1,821 rows x 2 operating points, a
   small model.py priced in the sandbox) is uploaded through the API; prints the seconds from upload
   to `scored`. `--full-submission`: every local test set instead (~40k rows in 5 datasets, IMDb's
   25k rows up to 512 tokens, a BERT-base-shaped model.py). Target: < 15 s. Needs the real data
   (../shared/data or $ELUE_DATA_DIR).

    python bench/bench_server.py [--models 500] [--clients 50] [--seconds 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PATHS = ["/leaderboard", "/tasks/sst-2", "/api/leaderboard"]


def seed_models(database_url: str, n: int, seed: int = 0) -> None:
    from elue.server.db import SCORED, Point, Submission, TaskResult, User, open_database
    from elue.server.security import hash_password
    from elue.tasks import TASK_NAMES

    rng = random.Random(seed)
    _, sessions = open_database(database_url)
    with sessions() as s:
        user = User(username="bench", password_hash=hash_password("bench-password"))
        s.add(user)
        s.flush()
        for i in range(n):
            params = rng.choice([14.0, 30.0, 45.0, 66.0, 67.0, 100.0, 109.0, 125.0])
            sub = Submission(
                owner_id=user.id,
                name=f"bench-model-{i:03d}",
                origin="measured",
                status=SCORED,
                public=True,
                params_m=params,
                storage_key=None,
                log="seeded by bench\n",
            )
            tasks = TASK_NAMES if rng.random() < 0.6 else rng.sample(TASK_NAMES, rng.randint(1, 5))
            for task in tasks:
                tr = TaskResult(task=task, params_m=params)
                for _ in range(rng.randint(1, 5)):
                    mflops = rng.uniform(500, 5000)
                    perf = 80 + 8 * (mflops / 5000) ** 0.5 + rng.gauss(0, 1.5)
                    tr.points.append(
                        Point(
                            file="p.tsv",
                            mflops=mflops,
                            performance=perf,
                            metrics={"accuracy": perf},
                            examples=1000,
                        )
                    )
                sub.tasks.append(tr)
            s.add(sub)
        s.commit()


async def _client(host: str, port: int, paths: list[str], deadline: float, lat: dict, errors: list) -> None:
    reader = writer = None
    k = random.randrange(len(paths))
    while time.perf_counter() < deadline:
        path = paths[k % len(paths)]
        k += 1
        t0 = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = None
            chunked = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                await reader.readexactly(length or 0)
            lat[path].append(time.perf_counter() - t0)
            if status != 200:
                errors.append(f"{path}: HTTP {status}")
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            errors.append(f"{path}: {type(e).__name__} {e}")
            if writer is not None:
                writer.close()
            reader = writer = None


async def load(url: str, clients: int, seconds: float) -> dict:
    host, port = url.removeprefix("http://").split(":")
    lat = {p: [] for p in PATHS}
    errors: list[str] = []
    deadline = time.perf_counter() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(_client(host, int(port), PATHS, deadline, lat, errors) for _ in range(clients)))
    wall = time.perf_counter() - t0
    every = sorted(x for v in lat.values() for x in v)

    def q(xs: list[float], p: float) -> float:
        return 1000 * xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")

    out = {
        "requests": len(every),
        "errors": len(errors),
        "rps": len(every) / wall,
        "p50_ms": q(every, 0.50),
        "p95_ms": q(every, 0.95),
        "p99_ms": q(every, 0.99),
        "max_ms": 1000 * every[-1] if every else None,
        "by_path": {},
        "error_samples": errors[:5],
    }
    for p, xs in lat.items():
        xs.sort()
        out["by_path"][p] = {"requests": len(xs), "p50_ms": q(xs, 0.5), "p95_ms": q(xs, 0.95)}
    return out


def start_server(home: Path, data_dir: Path | None, web_workers: int) -> tuple[subprocess.Popen, str]:
    sys.path[:0] = [str(REPO / "tests" / "server"), str(REPO / "tests")]
    from subprocesses import free_port

    port = free_port()
    args = [
        sys.executable,
        "-c",
        "from elue.cli import main; main()",
        "serve",
        "--port",
        str(port),
        "--home",
        str(home),
        "--web-workers",
        str(web_workers),
        "--admin",
        "admin",
    ]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    env = {**os.environ, "ELUE_ADMIN_PASSWORD": "admin-password"}
    env.pop("ELUE_DATABASE_URL", None)
    proc = subprocess.Popen(
        args, env=env, stdout=(home / "serve.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/api/leaderboard", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("server did not start:\n" + (home / "serve.log").read_text())


def scoring_latency(url: str, data_dir: Path, tmp: Path, full: bool = False) -> dict:
    sys.path[:0] = [str(REPO / "tests" / "server"), str(REPO / "tests")]
    from server_helpers import make_submission, zip_folder

    from elue.data import read_test_indices

    if full:
        # every local test set (~40k rows; IMDb 25k rows up to 512 tokens), BERT-base-shaped model.py
        from elue.example_submission import build_example_submission

        rows = build_example_submission(data_dir, tmp / "sub")
        n_rows, points = sum(rows.values()), len(rows)
        data = zip_folder(tmp / "sub")
    else:
        idx = read_test_indices(data_dir, "sst-2")
        n_rows, points = len(idx), 2
        data = zip_folder(make_submission(tmp / "sub", idx))
    token = httpx.post(url + "/api/tokens", json={"username": "admin", "password": "admin-password"}).json()[
        "token"
    ]
    h = {"authorization": f"Bearer {token}"}
    t0 = time.perf_counter()
    r = httpx.post(
        url + "/api/submissions",
        headers=h,
        data={"name": "bench upload"},
        files={"file": ("s.zip", data, "application/zip")},
        timeout=60,
    )
    r.raise_for_status()
    sid = r.json()["id"]
    while True:
        sub = httpx.get(f"{url}/api/submissions/{sid}", headers=h).json()
        if sub["status"] in ("scored", "failed"):
            break
        if time.perf_counter() - t0 > 300:
            break
        time.sleep(0.1)
    return {
        "rows": n_rows,
        "points": points,
        "upload_bytes": len(data),
        "status": sub["status"],
        "seconds_to_scored": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=500)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--web-workers", type=int, default=1)
    ap.add_argument("--no-scoring", action="store_true")
    ap.add_argument(
        "--full-submission",
        action="store_true",
        help="time a submission of every local test set (~40k rows, BERT-base model.py) instead of SST-2",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from elue.server.config import default_data_dir

    data_dir = default_data_dir()
    with tempfile.TemporaryDirectory() as tmpname:
        tmp = Path(tmpname)
        home = tmp / "home"
        home.mkdir()
        db_url = f"sqlite:///{home / 'elue.db'}"
        from elue.server import Settings, create_app

        create_app(Settings(state_dir=home, database_url=db_url, data_dir=data_dir))  # migrate + seed
        seed_models(db_url, args.models)
        proc, url = start_server(home, data_dir, args.web_workers)
        try:
            cold = {}
            for p in PATHS:  # first requests: board built and page rendered from the database
                t0 = time.perf_counter()
                httpx.get(url + p)
                cold[p] = 1000 * (time.perf_counter() - t0)
            result = {
                "models": args.models + 9,
                "clients": args.clients,
                "seconds": args.seconds,
                "web_workers": args.web_workers,
                "cpus": os.cpu_count(),
            }
            result["cold_ms"] = cold
            result["load"] = asyncio.run(load(url, args.clients, args.seconds))
            if not args.no_scoring and data_dir is not None:
                result["scoring"] = scoring_latency(url, data_dir, tmp, full=args.full_submission)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    ld = result["load"]
    print(
        f"{result['models']} models, {args.clients} clients x {args.seconds:.0f} s on loopback "
        f"({args.web_workers} web process(es), {os.cpu_count()} CPUs)"
    )
    print(f"  requests {ld['requests']}  ({ld['rps']:.0f}/s)  errors {ld['errors']}")
    print(
        f"  latency p50 {ld['p50_ms']:.1f} ms  p95 {ld['p95_ms']:.1f} ms  p99 {ld['p99_ms']:.1f} ms  "
        f"max {ld['max_ms']:.1f} ms"
    )
    for p, v in ld["by_path"].items():
        print(f"    {p:18s} n={v['requests']:6d}  p50 {v['p50_ms']:.1f} ms  p95 {v['p95_ms']:.1f} ms")
    print("  first (uncached) request: " + ", ".join(f"{p} {v:.0f} ms" for p, v in result["cold_ms"].items()))
    if ld["error_samples"]:
        print("  errors, e.g.:", ld["error_samples"])
    if "scoring" in result:
        sc = result["scoring"]
        print(
            f"  scoring: {'all local test sets' if args.full_submission else 'SST-2 test-set-sized'} upload ({sc['rows']} rows x {sc['points']} points, "
            f"{sc['upload_bytes'] / 1024:.0f} KB zip) {sc['status']} {sc['seconds_to_scored']:.1f} s after upload"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
