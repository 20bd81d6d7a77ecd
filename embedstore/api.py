"""The Python API: `embedstore.open(path)` returns a `Store`, whose methods are the CLI's commands.

    import embedstore
    st = embedstore.open("./.embedstore")
    st.encode("data/openi", model="biomedclip")
    st.query("cardiomegaly", k=5, where="view = 'frontal'")
    st.zeroshot(rule="pos-neg").to_polars()
    st.compare(methods=["zeroshot:pos-neg", "probe"])

Every method has the name of its command and the names of its options (`--calibrate-on` is
`calibrate_on`), and returns a polars DataFrame or a typed result whose `.to_polars()` is what
`--format json` prints. This is the only place a path becomes a store: the services below take
the internal `Storage` object this class holds.
"""

from __future__ import annotations

import os
from pathlib import Path

from embedstore.errors import InputError, StoreError
from embedstore.store import Storage

PathLike = str | os.PathLike
PROJECTION_METHODS = ("pca", "tsne", "umap")  # what `separability` stores (umap when installed)


class Store:
    """A store directory, with the CLI's commands as methods."""

    def __init__(self, path: PathLike | None = None, read_only: bool = False):
        self._storage = Storage(path, read_only=read_only)
        self._warm: dict = {}  # version -> its loaded model (`warm`, a server's)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def path(self) -> Path:
        """The store's directory."""
        return self._storage.path

    # ---- data sets: what a reader finds, what the model sees, phantoms -------------------------
    def inspect(self, source: str | None = None, dataset: str = "auto", labels: str | None = None,
                images: str | None = None, uncertain: str = "ignore", top_k: int = 14, seed: int = 0,
                boxes: str | None = None, box_format: str = "auto", views: str | None = None):
        """`embedstore inspect`: studies, images, views (known, given by a `views` file), per-finding
        counts and splits of a data set as its reader finds it, and/or a box file's counts; an `Inspection`."""
        from embedstore.data.inspect import inspect

        return inspect(source, dataset=dataset, labels=labels, images=images, uncertain=uncertain, top_k=top_k,
                       seed=seed, boxes=boxes, box_format=box_format, views=views)

    def preview(self, path: str, out: str | None = None, model: str | None = None, pretrained: str | None = None,
                size: int | None = None):
        """`embedstore preview`: write a PNG of the pixels the model sees; a `Preview`."""
        from embedstore.models.preview import preview

        return preview(path, out=out, model=model, pretrained=pretrained, size=size)

    def synth(self, out: str, studies: int = 100, seed: int = 0, size: int = 256, dicom: bool = False,
              labels_from: str | None = None, workers: int = 2, shift: str = "none", repeat_patients: float = 0.0,
              label_noise: float = 0.0, progress: bool = False):
        """`embedstore synth`: phantom radiographs with known findings and boxes in the Open-i
        layout under `out`; a `SynthSummary`. `repeat_patients` gives that fraction of patients a
        follow-up study, `label_noise` flips each written label with that probability; the truth
        goes to `out/truth/` (never read by the readers)."""
        from embedstore.synth import synth

        return synth(out, studies=studies, seed=seed, size=size, dicom=dicom, labels_from=labels_from,
                     workers=workers, shift=shift, repeat_patients=repeat_patients, label_noise=label_noise,
                     progress=progress)

    # ---- the store ------------------------------------------------------------------------------
    def encode(self, source: str, dataset: str = "auto", model: str = "biomedclip", pretrained: str | None = None,
               labels: str | None = None, images: str | None = None, boxes: str | None = None,
               box_format: str = "auto", batch_size: int = 32, workers: int | None = None, device: str = "auto",
               precision: str = "fp32", version: str | None = None, strict: bool = False, views: str | None = None,
               progress: bool = False, engine: str = "local", ray_address: str | None = None,
               ray_gpus_per_worker: float = 0.0, ray_actors: int = 1):
        """`embedstore encode`: every image and prompt of a data set once; an `EncodeResult`
        (version, encoded, skipped, failed, texts, seconds, ...; `exit_code` 0 or 3). A report that
        cannot be read is recorded in `errors` and the rest encoded, unless `strict`. `views`: a CSV of
        image id to DICOM View Position (Open-i's nlmcxr_dicom_metadata.csv.gz) giving the views.
        `engine="ray"`: the images through Ray Data, on the cluster at `ray_address` (auto | HOST:PORT)
        or a local one started for the run, `ray_actors` model actors with `ray_gpus_per_worker` GPUs
        each; the result's `nodes` lists the cluster's node addresses."""
        from embedstore.encode import encode

        return encode(self._storage, source, dataset=dataset, model=model, pretrained=pretrained, labels=labels,
                      images=images, boxes=boxes, box_format=box_format, batch_size=batch_size, workers=workers,
                      device=device, precision=precision, version=version, strict=strict, views=views,
                      progress=progress, engine=engine, ray_address=ray_address,
                      ray_gpus_per_worker=ray_gpus_per_worker, ray_actors=ray_actors)

    def query(self, text: str | None = None, image: str | None = None, like: str | None = None, k: int = 10,
              where: str | None = None, version: str | None = None, split: str | None = None,
              view: str | None = None, present: list[str] | None = None, absent: list[str] | None = None):
        """`embedstore query`: the top-k images for a text, an image file or a stored image (rank,
        score, image_id, path, view, labels, id); `split`, `view`, `present` / `absent` (finding
        names) filter as `where` does, without SQL."""
        from embedstore.query import query

        def run():
            with self._storage.reading():  # one connection for the query's reads
                ver = self._storage.resolve_version(version) if self._warm else version
                return query(self._storage, text=text, image=image, like=like, k=k, where=where, version=ver,
                             split=split, view=view, present=present, absent=absent, loaded=self._warm.get(ver))

        if image is not None:  # a file's bytes may change under its name
            return run()
        # a read-only store (a server's) answers a repeated query from memory while the file is unchanged
        key = ("query", text, like, k, where, version, split, view, *(None if f is None else tuple(f)
                                                                     for f in (present, absent)))
        return self._storage.memoised(key, run).clone()

    def image(self, image_id: str) -> dict:
        """One stored image: its metadata (split, view, path, report text in `findings` and
        `impression`), its labels ({finding: 1 / 0 / -1}) and its boxes; InputError for an unknown id."""
        found = self._storage.image_detail(image_id)
        if found is None:
            raise InputError(f"no image {image_id!r} in the store; see `embedstore sql \"SELECT image_id FROM images\"`")
        return found

    def thumbnail(self, image_id: str, size: int = 256) -> bytes:
        """A PNG of one stored image, its longer side at most `size` pixels."""
        from embedstore.data.images import thumbnail_png

        return thumbnail_png(self.image(image_id)["path"], size)

    def run_metrics(self, run_id: str):
        """One stored run's metrics (finding, metric, value, lo, hi); InputError for an unknown run."""
        if run_id not in self._storage.runs()["run_id"].to_list():
            raise InputError(f"no run {run_id!r} in the store; see `embedstore runs`")
        return self._storage.metrics_of([run_id]).drop("run_id")

    def projection(self, version: str | None = None, method: str = "pca", limit: int | None = None):
        """The stored 2-D projection of a version's test images that the report's projection charts
        draw, from the version's latest `separability` run that stored `method` (pca, tsne, umap):
        image_id, x, y, labels (positive findings joined by ", "; "none"), split, view, run_id,
        sorted by image id; a seeded sample of `limit` points when there are more; empty when no
        separability ran on the version (nothing is computed: the store is only read)."""
        import polars as pl

        if method not in PROJECTION_METHODS:
            raise InputError(f"method={method!r}: give one of {', '.join(PROJECTION_METHODS)}")
        if limit is not None and limit < 1:
            raise InputError(f"limit={limit}: give at least 1")
        run_ids = self._storage.runs_on([self._storage.resolve_version(version)])["run_id"].to_list()  # oldest first
        points = self._storage.projection_points(run_ids).filter(pl.col("method") == method)
        stored = set(points["run_id"].to_list())
        latest = [r for r in run_ids if r in stored][-1:]
        points = points.filter(pl.col("run_id").is_in(latest)).drop("method")
        if limit is not None and points.height > limit:
            points = points.sample(n=limit, seed=0)
        return points.sort("image_id")

    def warm(self, version: str | None = None) -> str:
        """Load the version's model once and keep it: later free-text and image queries and
        explanations on that version reuse it (what `serve --model-warm` does). Returns the version."""
        from embedstore.query import load_version_model

        ver = self._storage.resolve_version(version)
        if ver not in self._warm:
            self._warm[ver] = load_version_model(self._storage, ver)
        return ver

    def serve(self, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
              model_warm: bool = False) -> None:
        """`embedstore serve`: the store, opened read-only, as a JSON service with a browser page
        (uvicorn; blocks until stopped). Any host but loopback needs `token`, checked on every request."""
        from embedstore.serve import run

        store = self if self._storage.read_only else Store(self.path, read_only=True)
        run(store, host=host, port=port, token=token, model_warm=model_warm)

    def sql(self, statement: str | None = None, file: str | None = None, write: bool = False,
            external: bool = False):
        """`embedstore sql`: SQL over the store, read-only unless `write`; files, the network,
        extensions and settings out of reach unless `external`; `file` names a query in embedstore/sql/."""
        from embedstore.store.sql import run_sql

        return run_sql(self._storage, statement, file=file, write=write, external=external)

    def versions(self, drop: str | None = None):
        """`embedstore versions`: one row per version (status, lineage, model, dimension, counts,
        index); `drop` removes that version first (refused while another was made from it)."""
        if drop is not None:
            self._storage.drop_version(drop)
        return self._storage.versions()

    def verify(self, version: str | None = None, strict: bool = False):
        """`embedstore verify`: one row per (version, check); `strict` raises StoreError naming
        the first failed check (the CLI exits 2 then)."""
        from embedstore.store.verify import first_failure, verify

        report = verify(self._storage, version)
        bad = first_failure(report)
        if strict and bad:
            raise StoreError(f"verify failed: version {bad['version']}: {bad['check']}: {bad['detail']}")
        return report

    def index(self, version: str | None = None, kind: str = "auto", params: str | dict | None = None,
              exact_max: int | None = None):
        """`embedstore index`: rebuild the version's FAISS index by hand, an `IndexResult`. `kind`:
        `auto` (exact up to `exact_max` vectors, default 200,000; HNSW above), `exact`, `hnsw`,
        `hnsw-sq8` (compressed, re-ranked exactly by `IndexRefineFlat`'s float copy) or `ivf-pq` (PQ lists only,
        candidates re-ranked against their vectors read from DuckDB); `params` e.g.
        "M=48,efConstruction=200" or "nlist=1024,m=64,k_factor=16" (efSearch / nprobe are tuned on
        the version's own vectors unless given). A kind given by hand is kept by later rebuilds."""
        from embedstore.store import index as idx

        if kind != "auto" and kind not in idx.KINDS:
            raise InputError(f"--kind {kind!r}: give one of auto, {', '.join(idx.KINDS)}")
        if exact_max is not None and exact_max < 0:
            raise InputError(f"--exact-max {exact_max}: give a count of vectors, 0 or more")
        given = params if isinstance(params, dict) else idx.parse_params(params)
        ver = self._storage.resolve_version(version)
        built = self._storage.rebuild_index(ver, kind=kind, params=given, exact_max=exact_max)
        info = built["params"]
        return idx.IndexResult(ver, built["count"], built["kind"], info["chosen"], built["checksum"],
                               {k: v for k, v in info.items() if k not in ("kind", "chosen")})

    def export(self, out: PathLike, version: str | None = None):
        """`embedstore export`: the version's vectors as `out/vectors.parquet` (id, image_id, split,
        labels, vector; read by polars, DuckDB, Spark, Ray) and its model record as `out/model.json`;
        an `ExportResult`."""
        from embedstore.transfer import export

        return export(self._storage, version, out)

    def import_(self, source: PathLike, model_record: PathLike | None = None):
        """`embedstore import` (`import` is a Python keyword): vectors made elsewhere (a Parquet file
        with image_id and vector, or a folder `export` wrote) for images already in the store, with
        the model record they were made with (JSON, at least name and embed_dim; default
        `model.json` beside the file), as a new version: building until its vectors and index are
        written; an `ImportResult`."""
        from embedstore.transfer import import_vectors

        return import_vectors(self._storage, source, model_record)

    def splits(self, min_positives: int = 10):
        """`embedstore splits`: positives per finding in train, val and test (patient groups and
        images), how the splits were assigned, and the views known, given and inferred per split; a
        `SplitsReport`."""
        from embedstore.data.splits import SplitsReport, positives_table, view_table

        st = self._storage
        return SplitsReport(positives_table(st.split_positives(), st.findings(), min_positives), st.split_methods(),
                            min_positives, view_table(st.view_coverage()))

    # ---- analyses over stored vectors (no model, no torch) ---------------------------------------
    def zeroshot(self, version: str | None = None, rule: str = "all", templates: str | None = None,
                 calibrate_on: str | None = "val", operating_point: str = "max-f1", split: str = "test",
                 uncertain: str = "mask", blank: str = "mask", where: str | None = None, n_boot: int = 1000,
                 min_positives: int = 10, force: bool = False):
        """`embedstore zeroshot`: one stored run per rule; `Runs` (metrics per finding and macro
        with patient-bootstrap intervals; thresholds fitted on `calibrate_on`)."""
        from embedstore.analyses.zeroshot import zeroshot

        return zeroshot(self._storage, version, rule=rule, templates=templates, calibrate_on=calibrate_on,
                        operating_point=operating_point, split=split, uncertain=uncertain, blank=blank, where=where,
                        n_boot=n_boot, min_positives=min_positives, force=force)

    def probe(self, version: str | None = None, classifier: str = "logreg", calibrate_on: str | None = "val",
              operating_point: str = "max-f1", uncertain: str = "mask", blank: str = "mask",
              where: str | None = None, n_boot: int = 1000, min_positives: int = 10, force: bool = False):
        """`embedstore probe`: fit on train, C per finding and the threshold on val, score test;
        `Runs` with one run."""
        from embedstore.analyses.probe import probe

        return probe(self._storage, version, classifier=classifier, calibrate_on=calibrate_on,
                     operating_point=operating_point, uncertain=uncertain, blank=blank, where=where, n_boot=n_boot,
                     min_positives=min_positives, force=force)

    def separability(self, version: str | None = None, k: int = 15, uncertain: str = "mask",
                     where: str | None = None, tsne_max: int = 300, force: bool = False):
        """`embedstore separability`: silhouette, Fisher ratio, kNN agreement, centroid distances,
        cluster indices and projections (PCA of every test image, t-SNE of a seeded sample of at
        most `tsne_max`), fitted on train, scored on test; `Runs` with one run."""
        from embedstore.analyses.separability import separability

        return separability(self._storage, version, k=k, uncertain=uncertain, where=where, tsne_max=tsne_max,
                            force=force)

    def runs(self, kind: str | None = None):
        """`embedstore runs`: every stored run, newest first (optionally of one kind)."""
        from embedstore.analyses.runs import runs

        return runs(self._storage, kind)

    def stability(self, version: str | None = None, repeats: int = 5, seed: int = 0, uncertain: str = "mask",
                  blank: str = "mask", where: str | None = None, min_positives: int = 10):
        """`embedstore stability`: zero-shot, probe and separability on `repeats` fresh stratified
        splits, in memory; a `Stability` (mean and spread, and whether the ranking holds)."""
        from embedstore.analyses.stability import stability

        return stability(self._storage, version, repeats=repeats, seed=seed, where=where, uncertain=uncertain,
                         blank=blank, min_positives=min_positives)

    def seed_table(self, version: str | None = None, uncertain: str = "mask", blank: str = "mask",
                   where: str | None = None):
        """`embedstore seed-table`: the seed study's table (macro-F1, exact match, LRAP, coverage
        error, inter/intra ratio for zero-shot, probe and fine-tuned) from stored runs made under
        one label policy and image filter (the seed's: uncertain="negative", blank="negative")."""
        from embedstore.analyses.seed_table import seed_table

        return seed_table(self._storage, version, uncertain=uncertain, blank=blank, where=where)

    def compare(self, v1: str | None = None, v2: str | None = None, methods: list[str] | None = None,
                version: str | None = None, n_boot: int = 1000, no_run: bool = False):
        """`embedstore compare`: paired differences on the same test images, with group-bootstrap
        intervals, p-values (Holm across findings) and verdicts. `v1`, `v2`: every analysis run on
        both versions side by side; `methods` (e.g. ["zeroshot:pos-neg", "probe", "finetuned"]):
        every pair of methods on `version`. Versions: the analyses one of them lacks are first run on
        it with the other's settings, unless `no_run` (then the error names the commands)."""
        from embedstore.analyses import compare as cmp

        if methods:
            return cmp.compare_methods(self._storage, version, list(methods), n_boot=n_boot)
        if v1 is None or v2 is None:
            raise InputError("compare needs two versions (compare V1 V2) or --methods A,B on one version")
        return cmp.compare(self._storage, v1, v2, n_boot=n_boot, run_missing=not no_run)

    # ---- data-set quality from stored vectors (no model, no torch) ------------------------------
    def duplicates(self, version: str | None = None, threshold: str | float = "auto", across_splits: bool = False,
                   regroup: bool = False, space: str = "whitened", force: bool = False, scaling: str = "local"):
        """`embedstore duplicates`: near-duplicate image pairs (FAISS k-NN and range search) and their
        groups, each with its splits, studies and labels, stored as a run; `threshold` "auto" is
        picked from the nearest-neighbour similarities (`.rule` says how); `across_splits`: only
        groups that cross splits (probable leaks); `regroup`: write each group as one split group;
        `scaling` "local" scores a pair by its cosine less the two images' neighbourhood levels, "none" by the cosine.
        A `Duplicates` (`.to_polars()`: one row per group; `.pairs`, `.summary`)."""
        from embedstore.analyses.duplicates import duplicates

        return duplicates(self._storage, version, threshold=threshold, across_splits=across_splits, regroup=regroup,
                          space=space, force=force, scaling=scaling)

    def label_issues(self, version: str | None = None, folds: int = 5, seed: int = 0, where: str | None = None,
                     force: bool = False):
        """`embedstore label-issues`: labels Cleanlab finds suspect, from the probe's out-of-sample
        probabilities (folds of patients, else studies, over train and val; test never used),
        stored as a run. A `LabelIssues` (`.to_polars()`: flagged (image, finding) labels, most
        suspect first; `.images`: ranked images; `.skipped`: findings that could not be cross-validated)."""
        from embedstore.analyses.label_issues import label_issues

        return label_issues(self._storage, version, folds=folds, seed=seed, where=where, force=force)

    def infer_views(self, version: str | None = None, folds: int = 5, seed: int = 0, force: bool = False):
        """`embedstore infer-views`: a view probe fitted on the known views of train and val, its
        accuracy on held-out known views, and the inferred view (with its confidence) of every image
        whose view is unknown, in `images.inferred_view` (never over a known view). An
        `InferredViews` (`.to_polars()`: the inferred views; `.summary`)."""
        from embedstore.analyses.views import infer_views

        return infer_views(self._storage, version, folds=folds, seed=seed, force=force)

    # ---- models: fine-tune, Grad-CAM --------------------------------------------------------------
    def finetune(self, from_version: str | None = None, objective: str = "bce", train: str = "vision",
                 epochs: int = 10, lr: float = 1e-4, batch_size: int = 32, accumulate: int = 1, patience: int = 3,
                 device: str = "auto", precision: str = "fp32", seed: int = 0, head_init: str = "zeroshot",
                 workers: int | None = None, force: bool = False, progress: bool = False, on_epoch=None):
        """`embedstore finetune`: train on the train split and write a new version beside its
        parent (resumable; reused when done); a `FinetuneResult`. `on_epoch(row)` is called after
        each epoch with its loss and val macro AUROC."""
        from embedstore.finetune.run import finetune

        return finetune(self._storage, from_version, objective=objective, train=train, epochs=epochs, lr=lr,
                        batch_size=batch_size, accumulate=accumulate, patience=patience, device=device,
                        precision=precision, seed=seed, head_init=head_init, workers=workers, force=force,
                        progress=progress, on_epoch=on_epoch)

    def explain(self, image_id: str, finding: str, target: str = "zeroshot", version: str | None = None,
                method: str = "gradcam", layer: str | None = None, out: str | None = None, colormap: str = "jet"):
        """`embedstore explain`: a Grad-CAM overlay of one image for one finding on the original
        image, with its boxes; an `Explanation`."""
        from embedstore.explain.service import explain

        ver = self._storage.resolve_version(version) if self._warm else version
        return explain(self._storage, image_id, finding, target=target, version=ver, method=method, layer=layer,
                       out=out, colormap=colormap, loaded=self._warm.get(ver))

    def agreement(self, boxes: str | None = None, box_format: str = "auto", target: str = "zeroshot",
                  version: str | None = None, method: str = "gradcam", layer: str | None = None,
                  threshold: str = "top:0.15", split: str = "test", batch_size: int = 16, n_boot: int = 1000,
                  seed: int = 0, force: bool = False, progress: bool = False):
        """`embedstore agreement`: heatmaps against annotated boxes of the `split` images beside
        baselines, stored as a run (with overlays for the report); an `AgreementResult`."""
        from embedstore.explain.service import agreement

        return agreement(self._storage, boxes, box_format=box_format, target=target, version=version,
                         method=method, layer=layer, threshold=threshold, split=split, batch_size=batch_size,
                         n_boot=n_boot, seed=seed, force=force, progress=progress)

    # ---- output ---------------------------------------------------------------------------------
    def report(self, out: PathLike = "report.html", version: str | None = None,
               compare: tuple[str, str] | None = None, progress: bool = False):
        """`embedstore report`: one self-contained HTML file; a `BuiltReport`."""
        from embedstore.reports.build import build_report

        return build_report(self._storage, version=version, compare=compare, out=out, progress=progress)

    def demo(self, out: PathLike = "demo-out", studies: int = 1000, seed: int = 0, epochs: int = 3,
             model: str = "phantom-clip", shift: str = "site-b", echo=print):
        """`embedstore demo`: the whole study on phantoms under `out` (its own store in
        `out/store`); a `DemoResult`."""
        from embedstore.demo import demo

        return demo(out=out, studies=studies, seed=seed, epochs=epochs, model=model, shift=shift, echo=echo)

