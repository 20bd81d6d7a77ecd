"""The Python API: `embedstore.open(path)` returns this `Store`; its methods mirror the CLI.

    import embedstore
    st = embedstore.open("./.embedstore")
    st.encode("data/openi", model="biomedclip")
    st.query("cardiomegaly", k=5, where="view = 'frontal'")
    st.sql("SELECT view, count(*) FROM images GROUP BY view")
    st.versions(); st.verify()

Results are polars DataFrames. The lower-level reads and writers used by the analyses,
fine-tune and Grad-CAM modules are inherited from `embedstore.store.Store`.
"""

from __future__ import annotations

from embedstore.store.store import Store as _BaseStore


class Store(_BaseStore):
    """A store directory with the CLI's commands as methods."""

    def encode(self, source: str, dataset: str = "auto", model: str = "biomedclip", labels: str | None = None,
               images: str | None = None, batch_size: int = 32, workers: int | None = None, device: str = "auto",
               precision: str = "fp32", version: str | None = None, pretrained: str | None = None,
               progress: bool = False, loaded=None, boxes: str | None = None, box_format: str = "auto"):
        """`embedstore encode`: a one-row DataFrame (version, encoded, skipped, failed, texts,
        seconds, index_rebuilt, split_by_hash, images_per_s). The full summary is in `.last_encode`."""
        import polars as pl

        from embedstore.encode import encode

        summary = encode(source, dataset=dataset, model=model, labels=labels, images=images,
                         batch_size=batch_size, workers=workers, device=device, precision=precision,
                         version=version, store=self, pretrained=pretrained, progress=progress, loaded=loaded,
                         boxes=boxes, box_format=box_format)
        self.last_encode = summary
        return pl.DataFrame([summary.as_dict()])

    def query(self, text: str | None = None, image: str | None = None, like: str | None = None, k: int = 10,
              where: str | None = None, version: str | None = None):
        """`embedstore query`: rank, score, image_id, path, view, labels, id."""
        from embedstore.query import query

        return query(text=text, image=image, like=like, k=k, where=where, version=version, store=self)

    def sql(self, statement: str | None = None, file: str | None = None, write: bool = False):
        """`embedstore sql`: read-only unless `write=True`; `file` runs a named query."""
        from embedstore.store.sql import run_sql

        return run_sql(self, statement, file=file, write=write)

    def verify(self, version: str | None = None, strict: bool = False):
        """`embedstore verify`: one row per (version, check); `strict` raises StoreError
        naming the first failed check."""
        from embedstore.store.verify import first_failure, verify

        report = verify(self, version)
        bad = first_failure(report)
        if strict and bad:
            from embedstore.errors import StoreError

            raise StoreError(f"verify failed: version {bad['version']}: {bad['check']}: {bad['detail']}")
        return report

    def splits(self, min_positives: int = 10):
        """`embedstore splits`: one row per finding with its positive groups (patients, else studies)
        and images in train, val and test, and `below_min` (the evaluation splits with fewer than
        `min_positives` positive groups). How the splits were assigned is `split_methods()`."""
        from embedstore.data.splits import positives_table

        return positives_table(self.split_positives(), self.findings(), min_positives)

    # ---- analyses (embedstore/analyses/): read stored vectors only, every run stored ----------
    def zeroshot(self, version: str | None = None, rule: str = "all", templates: str | None = None,
                 calibrate_on: str | None = "val", split: str = "test", force: bool = False, **kw):
        """`embedstore zeroshot`: metrics (run_id, rule, finding, metric, value, lo, hi) of one
        run per rule; the RunResults are in `.last_runs`."""
        from embedstore.analyses.zeroshot import zeroshot

        self.last_runs = zeroshot(self, version, rule=rule, templates=templates, calibrate_on=calibrate_on,
                                  split=split, force=force, **kw)
        return _metrics_of(self.last_runs, "rule")

    def probe(self, version: str | None = None, classifier: str = "logreg", force: bool = False, **kw):
        """`embedstore probe`: metrics (run_id, finding, metric, value, lo, hi); RunResult in `.last_runs`."""
        from embedstore.analyses.probe import probe

        self.last_runs = [probe(self, version, classifier=classifier, force=force, **kw)]
        return _metrics_of(self.last_runs)

    def separability(self, version: str | None = None, force: bool = False, **kw):
        """`embedstore separability`: metrics (run_id, finding, metric, value); RunResult in `.last_runs`."""
        from embedstore.analyses.separability import separability

        self.last_runs = [separability(self, version, force=force, **kw)]
        return _metrics_of(self.last_runs)

    def stability(self, version: str | None = None, repeats: int = 5, seed: int = 0, where: str | None = None,
                  uncertain: str = "mask", blank: str = "mask", min_positives: int | None = None):
        """`embedstore stability`: zero-shot, probe and separability re-run on `repeats` fresh
        stratified splits (in memory); a `Stability` (summary per method and metric, per-split
        values, and whether the methods' ranking holds on every split)."""
        from embedstore.analyses.stability import stability

        return stability(self, version, repeats=repeats, seed=seed, where=where, uncertain=uncertain, blank=blank,
                         min_positives=min_positives)

    def seed_table(self, version: str | None = None):
        """`embedstore seed-table`: the seed study's results table (macro-F1, exact match, LRAP,
        coverage error, inter/intra ratio for zero-shot, probe and fine-tuned) from stored runs."""
        from embedstore.analyses.seed_table import seed_table

        return seed_table(self, version)

    # ---- fine-tuning (embedstore/finetune/commands.py) and version comparison -----------------
    def finetune(self, from_version: str | None = None, objective: str = "bce", train: str = "vision", **kw):
        """`embedstore finetune`: a new version beside `from_version`; returns a `FinetuneResult`
        (version, parent, epochs_run, best_val_auroc, resumed_from, reused, ...)."""
        from embedstore.finetune.commands import finetune

        return finetune(self, from_version=from_version, objective=objective, train=train, **kw)

    def compare(self, v1: str | None = None, v2: str | None = None, methods: list[str] | None = None,
                version: str | None = None, n_boot: int = 1000, seed: int = 0):
        """`embedstore compare`: paired differences on the same test images, with group-bootstrap
        intervals, p-values (Holm across findings) and verdicts. `v1`, `v2`: every analysis run on
        both versions side by side; `methods` (e.g. ["zeroshot:pos-neg", "probe", "finetuned"]):
        every pair of methods on `version`."""
        from embedstore.analyses import compare as cmp
        from embedstore.errors import InputError

        if methods:
            return cmp.compare_methods(self, version, list(methods), n_boot=n_boot, seed=seed)
        if v1 is None or v2 is None:
            raise InputError("compare needs two versions (compare V1 V2) or --methods A,B on one version")
        return cmp.compare(self, v1, v2, n_boot=n_boot, seed=seed)


def _metrics_of(results, config_key: str | None = None):
    """The runs' metrics tables stacked, with run_id (and one config value) in front."""
    import polars as pl

    frames = []
    for r in results:
        cols = [pl.lit(r.run_id).alias("run_id")]
        if config_key:
            cols.append(pl.lit(str(r.config.get(config_key))).alias(config_key))
        frames.append(r.metrics.select(*cols, pl.all()))
    return pl.concat(frames) if frames else pl.DataFrame()
