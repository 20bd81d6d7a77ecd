"""Data-set quality at IU-Xray's size: `duplicates` and `label-issues` over stored vectors, each
against a plain baseline timed in the same run; appends to RESULTS.md.

    OMP_NUM_THREADS=2 .venv/bin/python bench/quality.py [--n 7470] [--findings 18] [--dim 512]

1. A store with n synthetic unit vectors (tests/synthetic_vectors: clustered by label, IU-Xray-like
   imbalance, two images per patient) is written; then, in a fresh process that must not import
   torch, `duplicates` and `label-issues` run with force=True (nothing reused), timed end to end
   including reading the store; `duplicates`' own FAISS search time is read from its run.
2. Baselines on the same vectors in the same process: for duplicates, the full n x n similarity
   matrix in NumPy thresholded at the same cosine (the O(n^2) way); for label-issues, a plain
   loop of scikit-learn LogisticRegression per fold and finding (C=1, no C search, no Cleanlab).
Targets (issue 17): each command under 30 s, the duplicates search under 5 s, on 2 cores.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def duplicates_baseline(X, study, threshold: float) -> tuple[float, int]:
    """Seconds and pairs of the O(n^2) way: every similarity in one NumPy matrix, each image's level
    (mean of its 2nd .. 11th other-study similarities) from the same matrix, scores thresholded."""
    import numpy as np

    from embedstore.analyses.duplicates import NEIGHBOURS, search_space

    t = time.perf_counter()
    Z = search_space(X)
    S = Z @ Z.T
    S[study[:, None] == study[None, :]] = -np.inf
    top = -np.sort(-np.partition(S, S.shape[1] - NEIGHBOURS - 1, axis=1)[:, -NEIGHBOURS - 1:], axis=1)
    level = top[:, 1:].mean(axis=1)
    a, b = np.nonzero(np.triu(S - (level[:, None] + level[None, :]) / 2 >= threshold, k=1))
    return time.perf_counter() - t, int(len(a))


def label_issues_baseline(X, Y, groups, folds: int = 5) -> float:
    """Seconds of a plain out-of-fold loop: one LogisticRegression per fold and finding."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    t = time.perf_counter()
    P = np.full(Y.shape, np.nan)
    for fit, held in GroupKFold(n_splits=folds).split(X, groups=groups):
        for j in range(Y.shape[1]):
            y = Y[fit, j] == 1
            if y.any() and not y.all():
                P[held, j] = LogisticRegression(max_iter=1000).fit(X[fit], y).predict_proba(X[held])[:, 1]
    return time.perf_counter() - t


def child(path: str) -> None:
    """Time both commands and their baselines in this process; print JSON (and whether torch got imported)."""
    import numpy as np
    import polars as pl

    from embedstore.analyses.duplicates import duplicates
    from embedstore.analyses.label_issues import label_issues
    from embedstore.analyses.runs import load_data
    from embedstore.store import Storage

    st = Storage(path)
    t = time.perf_counter()
    dup = duplicates(st, force=True)
    dup_s = time.perf_counter() - t
    t = time.perf_counter()
    issues = label_issues(st, force=True)
    issues_s = time.perf_counter() - t
    metric = dict(zip(dup.run.metrics["metric"].to_list(), dup.run.metrics["value"].to_list()))
    data = load_data(st, None, None)
    meta = pl.DataFrame({"id": data.ids}).join(st.image_meta(), on="id", how="left")
    base_dup_s, base_pairs = duplicates_baseline(data.X, np.array(meta["study_id"].to_list()), dup.threshold)
    rows = np.isin(data.split, ["train", "val"])
    base_issues_s = label_issues_baseline(data.X[rows], np.nan_to_num(data.Y[rows]), data.groups[rows])
    print(json.dumps({"duplicates_s": dup_s, "search_s": metric["search_seconds"], "pairs": dup.pairs.height,
                      "threshold": dup.threshold, "baseline_duplicates_s": base_dup_s, "baseline_pairs": base_pairs,
                      "label_issues_s": issues_s, "baseline_label_issues_s": base_issues_s,
                      "flagged_labels": issues.candidates.height, "images": int(rows.sum()),
                      "torch_imported": "torch" in sys.modules}))


def main() -> None:
    from _common import synthetic_store_child, vector_bench_args

    args = vector_bench_args(__doc__.splitlines()[0])
    if args.child:
        child(args.child)
        return
    load = os.getloadavg()
    r = synthetic_store_child(__file__, args.n, args.findings, args.dim)
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    lines = [
        f"Synthetic stored vectors: {args.n} images x {args.findings} findings x d={args.dim} (two images per "
        f"patient); OMP_NUM_THREADS={threads}; nproc {os.cpu_count()}; load average at start "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min), at end {os.getloadavg()[0]:.1f}.",
        "",
        "| step | seconds | target |",
        "|---|---|---|",
        f"| duplicates (end to end, whitened, local scaling, auto threshold {r['threshold']:.4f}, {r['pairs']} pairs) "
        f"| {r['duplicates_s']:.2f} | < 30 |",
        f"| duplicates: the FAISS k-NN + range search itself | {r['search_s']:.2f} | < 5 |",
        f"| baseline: n x n NumPy similarity matrix, levels and scores at the same threshold ({r['baseline_pairs']} pairs) "
        f"| {r['baseline_duplicates_s']:.2f} | |",
        f"| label-issues (end to end, 5 folds over {r['images']} train + val images, C searched, Cleanlab; "
        f"{r['flagged_labels']} labels flagged) | {r['label_issues_s']:.2f} | < 30 |",
        f"| baseline: plain per-fold LogisticRegression loop (C=1, no Cleanlab) | {r['baseline_label_issues_s']:.2f} | |",
        "",
        f"torch imported by the commands: {r['torch_imported']}.",
        f"**Ratios:** duplicates search {r['baseline_duplicates_s'] / r['search_s']:.1f}x faster than the n x n "
        f"matrix (end to end {r['baseline_duplicates_s'] / r['duplicates_s']:.2f}x); label-issues takes "
        f"{r['label_issues_s'] / r['baseline_label_issues_s']:.2f}x the plain loop's time.",
    ]
    if args.no_results:
        print("\n".join(lines))
    else:
        from _common import append_results

        append_results("Data-set quality: duplicates and label-issues (bench/quality.py)", lines)


if __name__ == "__main__":
    main()
