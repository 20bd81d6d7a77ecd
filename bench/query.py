"""Search speed: exact search at 10k / 100k (/ 1M) stored vectors against the machine's memory-copy
bandwidth floor, HNSW latency and recall@10, and the whole `embedstore query "cardiomegaly"`
process with a stored prompt (against a bare `python -c pass`).

Vectors are model embeddings resampled, not uniform random: phantom-clip's image embeddings of
`--base-studies` synth phantoms (64-d), mixed pairwise into in-between points, lifted to 512-d
through a random orthonormal map, plus small noise (low intrinsic dimension, clustered, like real
embeddings).

    .venv/bin/python bench/query.py [--sizes 10000,100000] [--hnsw-n 200000] [--dim 512] [--base-studies 1000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, TINY_CFG, OpenClipLoaded, append_results, ensure_images_module, write_images  # noqa: E402


def copy_bandwidth(nbytes: int = 512 << 20) -> float:
    """Bytes/s of a large memcpy (best of 5): the floor for a scan of stored vectors."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * nbytes / best  # a copy reads nbytes and writes nbytes


def base_embeddings(n_studies: int) -> np.ndarray:
    """phantom-clip's unit vectors of `embedstore synth` phantoms (two images a study): model
    embeddings, as the issue asks, not uniform random vectors."""
    import torch
    from PIL import Image

    from embedstore.models import load_model
    from embedstore.synth import synth

    loaded = load_model("phantom-clip")
    with tempfile.TemporaryDirectory() as tmp:
        synth(str(Path(tmp) / "p"), studies=n_studies, seed=1001, size=128)
        paths = sorted((Path(tmp) / "p" / "images").glob("*.png"))
        out = []
        for start in range(0, len(paths), 256):
            x = torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p in paths[start:start + 256]])
            out.append(loaded.encode_images(x))
    return np.concatenate(out)


def resample(base: np.ndarray, n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    P, _ = np.linalg.qr(rng.standard_normal((dim, base.shape[1])))
    centred = base - base.mean(0)
    pick = centred[rng.integers(0, len(base), n)]
    mix = pick + 0.3 * centred[rng.integers(0, len(base), n)]  # in-between points: a manifold, not points
    X = (mix @ P.T).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X += (0.05 / np.sqrt(dim)) * rng.standard_normal(X.shape).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def time_queries(index, Q: np.ndarray, k: int = 10) -> tuple[float, np.ndarray]:
    index.search(Q[:1], k)
    times, out = [], []
    for q in Q:
        t = time.perf_counter()
        _, ids = index.search(q[None, :], k)
        times.append(time.perf_counter() - t)
        out.append(ids[0])
    return statistics.median(times), np.array(out)


def cli_query_time(repeat: int = 5) -> tuple[float, float]:
    """Median seconds of `embedstore query cardiomegaly` on a small encoded store, and of `python -c pass`."""
    sys.path.insert(0, str(ROOT / "tests"))
    from store_helpers import build_store

    with tempfile.TemporaryDirectory() as tmp:
        st, _ = build_store(Path(tmp), n=64)
        cmd = [sys.executable, "-m", "embedstore", "query", "cardiomegaly", "-k", "5", "--store", str(st.path),
               "--format", "json"]
        subprocess.run(cmd, capture_output=True, check=True)
        q = []
        for _ in range(repeat):
            t = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            q.append(time.perf_counter() - t)
    base = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        base.append(time.perf_counter() - t)
    return statistics.median(q), statistics.median(base)


def main() -> None:
    import faiss

    from embedstore.store import index as idx

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--hnsw-n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--base-studies", type=int, default=1000, help="phantom studies whose phantom-clip vectors are resampled")
    args = ap.parse_args()
    ensure_images_module()
    faiss.omp_set_num_threads(1)  # one query at a time, as the CLI does
    bw = copy_bandwidth()
    base = base_embeddings(args.base_studies)
    rows = [f"Memory copy bandwidth: {bw / 2**30:.1f} GiB/s (np.copyto of 512 MiB counted as read + write, best of 5).", "",
            "| stored vectors | index | build s | median query ms | scan floor ms | ratio to floor | recall@10 |",
            "|---|---|---|---|---|---|---|"]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    n_max = max(sizes + [args.hnsw_n])
    X = resample(base, n_max, args.dim)
    Q = resample(base, args.queries, args.dim, seed=1)
    ids = np.arange(n_max, dtype=np.int64) + 1
    for n in sizes:
        t = time.perf_counter()
        flat = idx.build(ids[:n], X[:n], kind="exact")
        build = time.perf_counter() - t
        med, _ = time_queries(flat, Q)
        floor = n * args.dim * 4 / bw
        rows.append(f"| {n:,} | exact (IndexFlatIP) | {build:.2f} | {med * 1e3:.2f} | {floor * 1e3:.2f} | "
                    f"{med / floor:.2f} | 1.000 |")
    if args.hnsw_n:
        n = args.hnsw_n
        flat = idx.build(ids[:n], X[:n], kind="exact")
        _, exact_ids = time_queries(flat, Q)
        faiss.omp_set_num_threads(0 or faiss.omp_get_max_threads())
        t = time.perf_counter()
        hnsw = idx.build(ids[:n], X[:n], kind="hnsw")
        build = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        med, got = time_queries(hnsw, Q)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact_ids)])
        rows.append(f"| {n:,} | HNSW32 efSearch {idx.HNSW_EF_SEARCH} | {build:.1f} | {med * 1e3:.2f} | - | - | "
                    f"{recall:.3f} |")
    q, py = cli_query_time()
    rows += ["", f"Whole process `embedstore query cardiomegaly` (stored prompt, 64-image store): median "
             f"{q:.2f} s; bare `python -c pass` {py:.2f} s; ratio {q / py:.1f}x. Goal: under 1 s."]
    append_results("bench/query.py", rows)


if __name__ == "__main__":
    main()
