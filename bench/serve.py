"""Load on `embedstore serve`: N concurrent clients on loopback against a 100k-vector store, with
stored-text queries, warm free-text queries (`--model-warm`), and stored-text queries while an
`embedstore encode` writes to the same store (issue 18 item 5).

    PYTHONPATH=. nice .venv/bin/python bench/serve.py [--n 100000] [--dim 512] [--clients 8] [--seconds 20]
                                                       [--index auto|exact|hnsw] [--encode-studies 150]

The store: `embedstore synth` phantoms encoded by a small open_clip CLIP of embedding size `--dim`
(exported as a `local-dir:` model, so free text has a real model to load), then padded to `--n`
vectors with resamples of those image embeddings (each a stored vector plus 0.3 of another plus
noise, re-normalised; its labels, split and view copied from the first), written through the
store's own `upsert_images` / `add_image_vectors`, and the index built as `embedstore index`
builds it (`--index auto` = by size: exact up to 200k vectors).

The server is `embedstore serve --model-warm` in a subprocess on 127.0.0.1 (tests/serve_process.py:
a free port, bounded wait for /health, stopped by its PID). Clients are threads with one
`httpx.Client` each, in this process (their CPU shares the machine with the server), each running
for `--seconds`. Baselines measured in the same run: the cold `embedstore query TEXT` process on
the same store, and one client alone. A request is an error when it is not a 200 or fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import ROOT, TINY_CFG, append_results  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))  # serve_process: the tests' server starter, not shipped
from serve_process import command, env, started  # noqa: E402

GOAL = {"p50": 20.0, "p99": 100.0}  # ms, stored text, 8 clients, 2 cores; and 0 errors
STORED = ("cardiomegaly", "effusion", "nodule", "pneumothorax", "atelectasis", "a chest x-ray showing cardiomegaly")
FREE = ("enlarged cardiac silhouette", "fluid at the left base", "round opacity in the right upper lobe",
        "collapsed lung on the left", "normal heart size and clear lungs")
MAX_CLIENTS = 64


# ---- the store ---------------------------------------------------------------------------------
def export_model(folder: Path, dim: int) -> str:
    """A small open_clip CLIP with embedding size `dim` (seeded weights) as a `local-dir:` model."""
    import open_clip
    import torch

    from embedstore.models import export_model as export

    cfg = {**TINY_CFG, "embed_dim": dim}
    torch.manual_seed(0)
    export(open_clip.CLIP(**cfg), folder, cfg)
    return f"local-dir:{folder}"


def build_store(root: Path, n: int, dim: int, studies: int, index: str) -> tuple[Path, str, Path]:
    """(store, model name, a second phantom folder to encode during the load): see the docstring."""
    import embedstore
    from embedstore.data.records import ImageRecord

    model = export_model(root / "model", dim)
    st = embedstore.open(root / "store")
    st.synth(str(root / "phantoms"), studies=studies, seed=1, size=64, workers=1)
    # the same seed renders the same first studies: encoding `more` skips those and appends the rest
    st.synth(str(root / "more"), studies=2 * studies, seed=1, size=64, workers=1)
    st.encode(str(root / "phantoms"), model=model, workers=0, device="cpu")
    storage = st._storage
    version = st.versions()["version"][-1]
    base_ids, base = storage.image_vectors(version)
    meta = st.sql(f"SELECT id, split, view FROM images WHERE id IN ({','.join(map(str, base_ids))}) ORDER BY id")
    labels = st.sql("SELECT id, finding, value FROM labels WHERE value IS NOT NULL")
    by_id: dict[int, dict[str, int]] = {}
    for i, f, v in labels.iter_rows():
        by_id.setdefault(i, {})[f] = int(v)
    split, view = meta["split"].to_list(), meta["view"].to_list()
    rng = np.random.default_rng(0)
    extra = n - len(base_ids)
    for start in range(0, extra, 20_000):
        m = min(20_000, extra - start)
        first, second = rng.integers(0, len(base), m), rng.integers(0, len(base), m)
        X = base[first] + 0.3 * base[second] + (0.05 / np.sqrt(dim)) * rng.standard_normal((m, dim))
        X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
        recs = [ImageRecord(image_id=f"BENCH{start + j:07d}", path=None, study_id=f"BS{start + j}",
                            patient_id=f"BP{start + j}", view=view[a], projection=None, split=split[a],
                            labels=by_id.get(int(base_ids[a]), {}), source="bench")
                for j, a in enumerate(first)]
        id_of = storage.upsert_images(recs)
        ids = np.array([id_of[r.image_id] for r in recs], dtype=np.int64)
        storage.add_image_vectors(version, ids, [f"bench{start + j}" for j in range(m)], X)
    st.index(version, kind=index)
    return root / "store", model, root / "more"


# ---- load --------------------------------------------------------------------------------------
def load(base: str, clients: int, seconds: float, texts, distinct: bool = False) -> dict:
    """`clients` threads issuing GET /query?text=... for `seconds`; latencies (ms) and errors.
    `distinct`: every request's text differs (a free text no cache could hold)."""
    import httpx

    if not 1 <= clients <= MAX_CLIENTS:
        raise SystemExit(f"--clients {clients}: give 1 to {MAX_CLIENTS}")
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(c: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            i = c
            while time.monotonic() < stop:
                text = texts[i % len(texts)] + (f" {i}" if distinct else "")
                i += clients
                t = time.perf_counter()
                try:
                    r = http.get("/query", params={"text": text, "k": 10})
                    ok = r.status_code == 200 and len(r.json()) == 10
                    why = f"{r.status_code} {r.text[:200]}"
                except Exception as err:  # noqa: BLE001 - counted, shown below
                    ok, why = False, repr(err)
                took = (time.perf_counter() - t) * 1e3
                with lock:
                    (times.append(took) if ok else errors.append(why))

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    wall = time.perf_counter() - start
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}", flush=True)
    return summary([{"clients": clients, "times": times, "errors": len(errors), "wall": wall}])


def summary(rounds: list[dict]) -> dict:
    """Rounds of `load` (the same clients) as one: exact percentiles over every request's latency."""
    times = [t for r in rounds for t in r["times"]]
    wall = sum(r["wall"] for r in rounds)
    q = np.percentile(times, [50, 99]) if times else (float("nan"), float("nan"))
    errors = sum(r["errors"] for r in rounds)
    return {"clients": rounds[0]["clients"], "requests": len(times) + errors, "errors": errors, "p50": float(q[0]),
            "p99": float(q[1]), "qps": len(times) / wall, "times": times, "wall": wall, "rounds": len(rounds)}


def cold_cli_ms(store: Path, text: str, repeat: int = 3) -> float:
    """Median wall time of a whole `embedstore query TEXT` process on the store (the no-server way)."""
    cmd = [*command(store)[:3], "query", text, "-k", "10", "--store", str(store), "--format", "json"]
    subprocess.run(cmd, env=env(), capture_output=True, check=True, timeout=300)
    took = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, env=env(), capture_output=True, check=True, timeout=300)
        took.append(time.perf_counter() - t)
    return statistics.median(took) * 1e3


def during_encode(base: str, store: Path, model: str, folder: Path, clients: int, limit_s: float) -> tuple[dict, dict]:
    """Stored-text load while `embedstore encode FOLDER` (a subprocess, stopped by its PID if it
    overruns `limit_s`) appends to the served version; (load, the encode's summary)."""
    import json

    cmd = [*command(store)[:3], "encode", str(folder), "--model", model, "--device", "cpu", "--workers", "0",
           "--store", str(store), "--format", "json"]
    out = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    got: list[dict] = []
    deadline = time.monotonic() + limit_s
    try:
        while out.poll() is None and time.monotonic() < deadline:
            got.append(load(base, clients, 2.0, STORED))
    finally:
        if out.poll() is None:
            os.kill(out.pid, 9)
        stdout, stderr = out.communicate(timeout=60)
    if out.returncode == 0:
        result = json.loads(stdout)
        result = result[0] if isinstance(result, list) else result
    else:
        result = {"error": (stderr.strip().splitlines() or ["killed"])[-1]}
    return summary(got), result


def show(name: str, r: dict, *more) -> None:
    print(name, {k: round(v, 2) for k, v in r.items() if k != "times"}, *more, flush=True)


def row(name: str, r: dict, cold_ms: float, single: float) -> str:
    return (f"| {name} | {r['clients']} | {r['requests']:,} | {r['errors']} | {r['p50']:.1f} | {r['p99']:.1f} | "
            f"{r['qps']:.0f} | {cold_ms / r['p50']:.0f} | {r['p50'] / single:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="stored vectors")
    ap.add_argument("--dim", type=int, default=512, help="embedding size (512: BiomedCLIP's)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each load phase")
    ap.add_argument("--index", default="auto", help="the index kind (`embedstore index --kind`)")
    ap.add_argument("--encode-studies", type=int, default=150, help="phantom studies encoded (twice: the store, the background encode)")
    ap.add_argument("--no-results", action="store_true", help="Print only; do not append to RESULTS.md.")
    args = ap.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        store, model, more = build_store(root, args.n, args.dim, args.encode_studies, args.index)
        import embedstore

        st = embedstore.open(store)
        version = st.versions().row(-1, named=True)
        print(f"store: {version['images']:,} vectors, d={args.dim}, index {version['index_kind']}, built in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        cold = cold_cli_ms(store, STORED[0])
        print(f"cold CLI query: {cold:.0f} ms", flush=True)
        results = {}
        with started(store, "--model-warm", log=root / "server.log", wait_s=300) as base:
            results["single"] = load(base, 1, args.seconds / 2, STORED)
            show("single", results["single"])
            results["stored"] = load(base, args.clients, args.seconds, STORED)
            show("stored", results["stored"])
            results["free"] = load(base, args.clients, args.seconds, FREE, distinct=True)
            show("free", results["free"])
            results["encode"], enc = during_encode(base, store, model, more, args.clients, limit_s=600)
            show("encode", results["encode"], enc)
            results["after"] = load(base, args.clients, args.seconds / 2, STORED)
            show("after", results["after"])
        with started(store, log=root / "server-cold.log", wait_s=300) as base:
            results["free-cold"] = load(base, 1, args.seconds / 2, FREE, distinct=True)
            show("free-cold", results["free-cold"])
        end = st.versions().row(-1, named=True)
    single = results["single"]["p50"]
    s = results["stored"]
    met = s["p50"] <= GOAL["p50"] and s["p99"] <= GOAL["p99"] and s["errors"] == 0
    rows = [f"{args.n:,} stored vectors, d={args.dim}, index `{version['index_kind']}` (`--index {args.index}`), "
            f"model: a small open_clip CLIP exported as local-dir (TINY_CFG towers); `embedstore serve --model-warm` "
            f"on 127.0.0.1, clients are httpx threads in the bench process, k=10, {args.seconds:.0f} s a phase "
            f"({args.seconds / 2:.0f} s for single-client phases).", "",
            "| phase | clients | requests | errors | p50 ms | p99 ms | throughput q/s | cold CLI ÷ p50 | p50 ÷ single-client p50 |",
            "|---|---|---|---|---|---|---|---|---|",
            row("stored text, one client (baseline)", results["single"], cold, single),
            row("stored text", s, cold, single),
            row("free text, warm model (a new text each request)", results["free"], cold, single),
            row(f"stored text while `encode` appends {enc.get('encoded', '?')} images to the served version",
                results["encode"], cold, single),
            row("stored text after that encode", results["after"], cold, single),
            row("free text, no --model-warm (model loaded each request)", results["free-cold"], cold, single),
            "", f"Cold `embedstore query {STORED[0]}` process on the same store (baseline): median {cold:.0f} ms.",
            f"Background encode: {enc['encoded']} images in {enc['seconds']:.1f} s, {enc['commits']} commits taking "
            f"{enc['commit_seconds']:.1f} s (readers wait while a commit holds the file), index rebuilt "
            f"{enc['index_rebuilt']}; version after it: {end['images']:,} vectors, index {end['index_kind']}."
            if "error" not in enc else f"Background encode failed: {enc['error']}",
            "", f"Goal (stored text, {args.clients} clients, 2 cores): p50 <= {GOAL['p50']:.0f} ms, p99 <= "
            f"{GOAL['p99']:.0f} ms, 0 errors: **{'met' if met else 'not met'}**. nproc {os.cpu_count()}; load "
            f"average at the start {' '.join(f'{x:.2f}' for x in load_start)}, at the end "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}."]
    if args.no_results:
        print("\n".join(rows))
    else:
        append_results("bench/serve.py (issue 18 item 5)", rows)


if __name__ == "__main__":
    main()
