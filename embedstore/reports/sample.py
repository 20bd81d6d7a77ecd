"""A synthetic store with the documented schema (docs/architecture.md), for the report's tests and
for previewing the report without running the pipeline. Numbers are random, not results.

`SampleStore(n_images, findings, ...)` answers `.sql(query) -> polars.DataFrame` like the real
`Store`, from an in-memory DuckDB database; `sections` picks which analyses have "run".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

FINDINGS = ["Opacity", "Granuloma", "Atelectasis", "Cardiomegaly", "Calcified Granuloma", "Effusion",
            "Fracture", "Emphysema", "Nodule", "Pneumonia", "Edema", "Pneumothorax"]
ALL_SECTIONS = ("zeroshot", "probe", "finetune", "separability", "agreement")

SCHEMA = """
CREATE TABLE images (id BIGINT PRIMARY KEY, image_id TEXT UNIQUE, path TEXT, content_hash TEXT, study_id TEXT,
  patient_id TEXT, view TEXT, projection TEXT, split TEXT, source TEXT, findings TEXT, impression TEXT,
  width INTEGER, height INTEGER);
CREATE TABLE labels (id BIGINT, finding TEXT, value TINYINT);
CREATE TABLE versions (version TEXT PRIMARY KEY, parent TEXT, model_name TEXT, model_record JSON, preprocess JSON,
  dtype TEXT, normalized BOOLEAN, dim INTEGER, logit_scale DOUBLE, count BIGINT, index_file TEXT,
  index_checksum TEXT, code_version TEXT, created TIMESTAMP, kind TEXT);
CREATE TABLE runs (run_id TEXT PRIMARY KEY, kind TEXT, version TEXT, config JSON, config_hash TEXT,
  code_version TEXT, started TIMESTAMP, duration_s DOUBLE);
CREATE TABLE metrics (run_id TEXT, finding TEXT, metric TEXT, value DOUBLE, lo DOUBLE, hi DOUBLE);
CREATE TABLE image_scores (run_id TEXT, id BIGINT, finding TEXT, score DOUBLE, pred BOOLEAN);
CREATE TABLE projections (run_id TEXT, method TEXT, id BIGINT, x DOUBLE, y DOUBLE);
"""


class SampleStore:
    """In-memory stand-in for `Store` with random but plausible contents."""

    def __init__(self, n_images: int = 600, findings: list[str] | None = None, sections=ALL_SECTIONS,
                 path: str | Path | None = None, seed: int = 0):
        import duckdb

        self.path = Path(path) if path is not None else None
        self.findings = list(findings or FINDINGS)
        self.con = duckdb.connect(":memory:")
        self.con.execute(SCHEMA)
        self.rng = np.random.default_rng(seed)
        self._run_no = 0
        self.y = self._images_and_labels(n_images)
        self._versions("finetune" in sections)
        if "zeroshot" in sections:
            self._classifier("zeroshot", "v1", {"rule": "raw-dot", "templates": "single"}, signal=0.6, bias=2.0)
            self._classifier("zeroshot", "v1", {"rule": "pos-neg", "templates": "ensemble", "calibrate_on": "val"}, signal=1.2, bias=0.0)
        if "probe" in sections:
            self._classifier("probe", "v1", {"classifier": "logreg"}, signal=2.0, bias=0.0)
        if "finetune" in sections:
            self._classifier("probe", "v1-ft", {"classifier": "logreg"}, signal=2.6, bias=0.0)
        if "separability" in sections:
            self._separability("v1")
        if "agreement" in sections:
            self._agreement("v1")

    def sql(self, query: str) -> pl.DataFrame:
        return self.con.sql(query).pl()

    def resolve_version(self, version: str | None = None) -> str:
        return version or self.sql("SELECT version FROM versions ORDER BY created DESC LIMIT 1")["version"][0]

    def _insert(self, table: str, frame: pl.DataFrame) -> None:
        self.con.register("_frame", frame.to_arrow())
        self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _frame")
        self.con.unregister("_frame")

    def _images_and_labels(self, n: int) -> np.ndarray:
        rng = self.rng
        ids = np.arange(1, n + 1)
        split = rng.choice(["train", "val", "test"], size=n, p=[0.7, 0.1, 0.2])
        view = rng.choice(["frontal", "lateral"], size=n, p=[0.5, 0.5])
        self._insert("images", pl.DataFrame({
            "id": ids, "image_id": [f"CXR{i // 2 + 1}_IM-{i:04d}" for i in ids], "path": [f"img/{i}.png" for i in ids],
            "split": split, "view": view, "source": "sample",
        }))
        prev = np.geomspace(0.2, 0.01, len(self.findings))
        y = (rng.random((n, len(self.findings))) < prev).astype(np.int8)
        value = y.astype(float)
        value[rng.random(y.shape) < 0.03] = -1  # some uncertain
        value[rng.random(y.shape) < 0.02] = np.nan  # some missing
        self.split = split
        self._insert("labels", pl.DataFrame({
            "id": np.repeat(ids, len(self.findings)), "finding": self.findings * n, "value": value.ravel(),
        }, strict=False).with_columns(pl.col("value").fill_nan(None).cast(pl.Int8)))
        return y

    def _versions(self, finetuned: bool) -> None:
        record = {"name": "phantom-clip", "source": "package", "embed_dim": 128, "image_size": 64, "logit_scale": 100.0}
        rows = [{"version": "v1", "parent": None, "kind": "encode", "created": "2026-11-24 10:00:00"}]
        if finetuned:
            rows.append({"version": "v1-ft", "parent": "v1", "kind": "finetune", "created": "2026-11-24 11:00:00"})
        frame = pl.DataFrame(rows).with_columns(
            model_name=pl.lit("phantom-clip"), model_record=pl.lit(json.dumps(record)), dtype=pl.lit("float32"),
            dim=pl.lit(128), count=pl.lit(int(self.y.shape[0])), code_version=pl.lit("0.1.0"),
            created=pl.col("created").str.to_datetime())
        self._insert("versions", frame)

    def _run(self, kind: str, version: str, config: dict) -> str:
        self._run_no += 1
        run_id = f"{kind}-{self._run_no:03d}"
        self._insert("runs", pl.DataFrame({
            "run_id": [run_id], "kind": [kind], "version": [version], "config": [json.dumps(config)],
            "config_hash": [f"h{self._run_no}"], "code_version": ["0.1.0"],
            "started": [f"2026-11-24 12:{self._run_no:02d}:00"], "duration_s": [round(float(self.rng.random()), 3)],
        }).with_columns(pl.col("started").str.to_datetime()))
        return run_id

    def _classifier(self, kind: str, version: str, config: dict, signal: float, bias: float) -> None:
        from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

        run_id = self._run(kind, version, config)
        test = np.flatnonzero(self.split == "test")
        y = self.y[test]
        score = signal * y + self.rng.normal(size=y.shape) + bias
        pred = score > (0 if bias else signal / 2 + 0.5)
        n, k = y.shape
        self._insert("image_scores", pl.DataFrame({
            "run_id": run_id, "id": np.repeat(test + 1, k), "finding": self.findings * n,
            "score": score.ravel(), "pred": pred.ravel(),
        }))
        rows = []
        for j, f in enumerate(self.findings):
            if 0 < y[:, j].sum() < n:
                for m, v in (("auroc", roc_auc_score(y[:, j], score[:, j])),
                             ("average_precision", average_precision_score(y[:, j], score[:, j])),
                             ("f1", f1_score(y[:, j], pred[:, j]))):
                    rows.append({"finding": f, "metric": m, "value": v, "lo": max(0, v - 0.08), "hi": min(1, v + 0.08)})
        rows.append({"finding": None, "metric": "macro_f1", "value": float(np.mean([r["value"] for r in rows if r["metric"] == "f1"])), "lo": None, "hi": None})
        self._insert("metrics", pl.DataFrame(rows).with_columns(run_id=pl.lit(run_id)))

    def _separability(self, version: str) -> None:
        run_id = self._run("separability", version, {"metric": "cosine"})
        rows = [{"finding": f, "metric": m, "value": float(self.rng.random() * s)}
                for f in self.findings for m, s in (("silhouette", 0.2), ("fisher_ratio", 2.0), ("knn_agreement", 1.0))]
        rows.append({"finding": None, "metric": "centroid_ratio", "value": 1.5})
        self._insert("metrics", pl.DataFrame(rows).with_columns(run_id=pl.lit(run_id)))
        n = self.y.shape[0]
        centres = self.rng.normal(size=(len(self.findings), 2)) * 3
        for method in ("pca", "tsne"):
            xy = self.rng.normal(size=(n, 2)) + (self.y @ centres) / np.maximum(self.y.sum(1, keepdims=True), 1)
            self._insert("projections", pl.DataFrame({
                "run_id": run_id, "method": method, "id": np.arange(1, n + 1), "x": xy[:, 0], "y": xy[:, 1]}))

    def _agreement(self, version: str) -> None:
        run_id = self._run("agreement", version, {"target": "probe", "method": "gradcam"})
        rows = []
        for f in self.findings[:5]:
            for m in ("pointing_game", "energy_pointing_game", "iou"):
                for suffix, lvl in (("", 0.6), ("_random", 0.2), ("_centre", 0.3)):
                    v = float(np.clip(lvl + self.rng.normal() * 0.05, 0, 1))
                    rows.append({"finding": f, "metric": m + suffix, "value": v, "lo": max(0, v - 0.1), "hi": min(1, v + 0.1)})
        rows.append({"finding": None, "metric": "pointing_game", "value": 0.6, "lo": 0.55, "hi": 0.65})
        self._insert("metrics", pl.DataFrame(rows).with_columns(run_id=pl.lit(run_id)))
        if self.path is not None:
            self._overlays(self.path / "heatmaps" / run_id)

    def _overlays(self, folder: Path, count: int = 6) -> None:
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        yy, xx = np.mgrid[0:512, 0:512]
        for i in range(count):
            cx, cy = self.rng.integers(120, 400, size=2)
            heat = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 4000.0)
            base = 90 + 60 * np.sin(xx / 40.0) * np.cos(yy / 55.0)
            rgb = np.stack([base + 150 * heat, base + 40 * heat, base * (1 - heat)], -1).clip(0, 255).astype(np.uint8)
            Image.fromarray(rgb).save(folder / f"CXR{i + 1}_IM-{i:04d}_{self.findings[i % len(self.findings)]}.png")
