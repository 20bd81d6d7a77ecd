"""The `explain` and `agreement` services: Grad-CAM heatmaps of stored images, and their agreement
with annotated boxes, on a store (`Storage`).

Targets per version: "zeroshot" is the pos-neg logit from the version's stored prompt
embeddings and logit scale (the score `embedstore zeroshot --rule pos-neg` evaluates); "probe"
reads the latest stored logistic-regression probe of the version (`probe_weights`); "finetuned"
needs the fine-tuned model's classifier head (see `finetuned_target`).

`agreement` scores the boxed items of one split (test by default): a probe is trained on the
train split, so its heatmaps on train images are not a held-out measurement. The val split's
boxed items fit the `dice@val_threshold` cut and are otherwise left out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedstore.errors import InputError
from embedstore.progress import Progress

TARGETS = ("zeroshot", "probe", "finetuned")
SPLITS = ("train", "val", "test", "all")
DEFAULT_LOGIT_SCALE = 100.0  # a version without a recorded scale, as `analyses.runs.load_data` assumes


def _image_rows(st, image_ids: list[str]):
    """images rows (id, image_id, path, width, height) for the ids; InputError naming unknown ones."""
    import polars as pl

    rows = st.image_files(image_ids)
    missing = sorted(set(map(str, image_ids)) - set(rows["image_id"].to_list()))
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise InputError(f"image id(s) {', '.join(map(repr, missing[:3]))}{more} not in store {st.path}; "
                         "check the id or encode the data set first")
    no_file = rows.filter(pl.col("path").is_null())
    if no_file.height:
        raise InputError(f"image {no_file['image_id'][0]!r} has no image file in the store; cannot explain it")
    return rows


def build_target(st, version: str, kind: str, finding: str, loaded=None):
    """The Grad-CAM target of `kind` for `finding` on `version`."""
    from embedstore.explain import targets

    if kind == "zeroshot":
        prompts, M = st.text_vectors(version)
        scale = st.version(version).logit_scale
        return targets.zeroshot_target(finding, prompts, M, DEFAULT_LOGIT_SCALE if scale is None else float(scale),
                                       version=version)
    if kind == "probe":
        weights = st.probe_weights(version=version)
        if weights.is_empty():
            raise InputError(f"no stored probe for version {version}; run `embedstore probe --version {version}` first")
        return targets.probe_target(finding, weights)
    if kind == "finetuned":
        return finetuned_target(st, version, finding, loaded)
    raise InputError(f"unknown target {kind!r}; choose one of {', '.join(TARGETS)}")


def finetuned_target(st, version: str, finding: str, loaded=None):
    """The fine-tuned classifier head's logit for `finding` (a `bce` fine-tuned version)."""
    from embedstore.explain.targets import HeadTarget
    from embedstore.models.heads import load_head

    head, findings = load_head(st.version(version))
    if finding not in findings:
        raise InputError(f"finding {finding!r} has no output in version {version}'s head; "
                         f"choose one of: {', '.join(findings)}")
    return HeadTarget(finding, head, findings.index(finding), normalize=False)


def _load_model(st, version: str):
    from embedstore.models import load_model

    return load_model(st.version(version))


@dataclass
class Explanation:
    """What `explain` drew: the image, finding, target, method and layer, the heatmap's peak in
    original pixels, the boxes drawn, whether the heatmap came from the cache, and the PNG."""

    image_id: str
    finding: str
    target: str
    version: str
    method: str
    layer: str
    peak_x: int
    peak_y: int
    boxes: int
    cached: bool
    out: str

    def to_polars(self):
        import polars as pl

        return pl.DataFrame([asdict(self)])


def explain(st, image_id: str, finding: str, target: str = "zeroshot", version: str | None = None,
            method: str = "gradcam", layer: str | None = None, out: str | None = None, colormap: str = "jet",
            loaded=None) -> Explanation:
    """Explain one image for one finding; write the overlay PNG on the original image.
    `loaded` reuses a model already loaded for the version (many explanations in a row)."""
    from embedstore.explain.cache import HeatmapCache, HeatmapKey, cached_heatmaps
    from embedstore.explain.heatmaps import _read, method_class
    from embedstore.explain.layers import resolve_layer
    from embedstore.explain.overlay import write_overlay

    method_class(method)
    version = st.resolve_version(version)
    row = _image_rows(st, [image_id]).row(0, named=True)
    loaded = loaded or _load_model(st, version)
    tgt = build_target(st, version, target, finding, loaded)
    cache = HeatmapCache(st.path / "heatmaps")
    layer_name = resolve_layer(loaded.model, layer).name
    before = cache.get(HeatmapKey(version, tgt.cache_id, method.lower(), layer_name, tgt.finding, image_id))
    hm = cached_heatmaps(loaded, [(image_id, row["path"])], tgt, cache, version, method, layer_name)[image_id]
    original = hm.original()
    boxes = _boxes_of(st, image_id, finding)
    out = Path(out or f"explain-{_slug(image_id)}-{_slug(finding)}-{_slug(method)}.png")
    write_overlay(out, _read(row["path"]), original, boxes, hm.geometry.visible_box(), colormap)
    py, px = np.unravel_index(int(np.argmax(original)), original.shape)
    return Explanation(image_id, finding, target, version, method, layer_name, int(px), int(py), len(boxes),
                       before is not None, str(out))


def _boxes_of(st, image_id: str, finding: str) -> list[tuple]:
    try:
        df = st.boxes()
    except Exception:  # noqa: BLE001 - a store without boxes still gets its overlay
        return []
    df = df.filter((df["image_id"] == image_id) & (df["finding"] == finding))
    return [tuple(r) for r in df.select("x_min", "y_min", "x_max", "y_max").iter_rows()]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))


class _LazyOriginal(Mapping):
    """(image_id, finding) -> original-frame heatmap, mapped on access (keeps memory small)."""

    def __init__(self, maps: dict):
        self.maps = maps

    def __getitem__(self, key):
        return self.maps[key].original()

    def __iter__(self):
        return iter(self.maps)

    def __len__(self):
        return len(self.maps)


@dataclass
class AgreementResult:
    """An agreement run and what it scored; unpacks as `run, per_item` (per_item None when a
    stored run was reused). `left_out` counts the boxed items (image, finding) of the splits not
    scored ("unsplit": images without a split); the val ones still fit the value cut."""

    run: Any
    per_item: Any
    split: str
    scored: int
    left_out: dict[str, int] = field(default_factory=dict)
    overlays: int = 0  # overlay PNGs written for the report (`write_gallery`)

    def __iter__(self):
        return iter((self.run, self.per_item))

    def to_polars(self):
        """The run's summary metrics: finding (None = all items), metric (`metric@baseline` for a
        baseline), value, lo, hi."""
        return self.run.metrics

    def left_out_text(self) -> str:
        """e.g. "235 train, 23 val"."""
        return ", ".join(f"{n} {split}" for split, n in self.left_out.items())


def agreement(st, boxes: str | None = None, box_format: str = "auto", target: str = "zeroshot",
              version: str | None = None, method: str = "gradcam", layer: str | None = None,
              threshold: str = "top:0.15", split: str = "test", batch_size: int = 16, n_boot: int = 1000,
              seed: int = 0, force: bool = False, gallery: int = 12, loaded=None,
              progress: bool = False) -> AgreementResult:
    """Heatmap-box agreement for every annotated (image, finding) of `split` (train | val | test
    | all); stored as an `agreement` run whose config records the split and the left-out counts.

    Boxes come from `boxes` (a file) or else the store's boxes table. Heatmaps of the val split's
    boxed items are computed too (and cached): they fit the `dice@val_threshold` cut, and are
    scored only when `split` is val or all (their val-fitted Dice is then in-sample).
    Intervals resample patient groups (`Storage.image_groups()`). `gallery` overlay PNGs are
    written where the report finds them (`write_gallery`, from the cached heatmaps). `progress`
    shows a bar over the heatmaps.
    """
    import polars as pl

    from embedstore.analyses.runs import cached_run, refuse_fitted
    from embedstore.data.datasets import read_boxes
    from embedstore.explain import agreement as agr
    from embedstore.explain.cache import HeatmapCache, cached_heatmaps
    from embedstore.explain.heatmaps import method_class
    from embedstore.explain.layers import resolve_layer

    thr = agr.Threshold.parse(threshold)  # bad options fail before the store is opened
    method_class(method)
    if split not in SPLITS:
        raise InputError(f"--split {split!r} is not one of {', '.join(SPLITS)}")
    version = st.resolve_version(version)
    if boxes and not Path(boxes).is_file():
        raise InputError(f"--boxes: no file {boxes}")
    box_df = read_boxes(boxes, box_format=box_format) if boxes else st.boxes()
    if box_df.height == 0:
        raise InputError("no boxes: pass --boxes FILE or load boxes into the store")
    agr._checked_boxes(box_df)
    box_df = box_df.with_columns(pl.col("image_id").cast(pl.String), pl.col("finding").cast(pl.String))
    rows = _image_rows(st, box_df["image_id"].to_list())
    images = _with_groups(st, rows)
    scored, val, left_out = _split_boxes(box_df, images, split)
    scored_ids = images.filter(pl.col("image_id").is_in(scored["image_id"].unique().to_list()))["id"].to_numpy()
    refuse_fitted(st, version, scored_ids, f"agreement on split {split!r}")  # a tuned model's own images
    needed = pl.concat([scored, val]).select("image_id", "finding").unique()
    paths = dict(zip(images["image_id"].to_list(), images["path"].to_list()))
    loaded = loaded or _load_model(st, version)
    layer_name = resolve_layer(loaded.model, layer).name
    findings = sorted(set(needed["finding"].to_list()))
    tgts = {f: build_target(st, version, target, f, loaded) for f in findings}  # fail before any work
    fingerprint = hashlib.sha256(box_df.sort(box_df.columns).write_csv().encode()).hexdigest()[:16]
    groups = dict(zip(images["image_id"].to_list(), images["group_id"].to_list()))
    n_scored = scored.select("image_id", "finding").unique().height
    config = {"target": target, "targets": {f: t.cache_id for f, t in tgts.items()}, "method": method.lower(),
              "layer": layer_name, "threshold": str(thr), "n_boot": n_boot, "seed": seed, "boxes": fingerprint,
              "split": split, "scored": n_scored, "left_out": left_out, "splits": _split_fingerprint(images),
              "val_cut": {"grid": [float(agr.VALUE_GRID[0]), float(agr.VALUE_GRID[-1]), len(agr.VALUE_GRID)],
                          "min_val_items": agr.MIN_VAL_ITEMS},
              "pixel_grid": {"max_side": agr.MAX_PIXEL_SIDE, "decimals": agr.PIXEL_GRID_DECIMALS, "rounding": "range"}}
    result: dict = {}

    def compute():
        cache = HeatmapCache(st.path / "heatmaps")
        maps = {}
        with Progress("heatmaps", needed.height, unit="heatmaps", enabled=progress) as bar:
            for f in findings:
                ids = sorted(set(needed.filter(pl.col("finding") == f)["image_id"].to_list()))
                got = cached_heatmaps(loaded, [(i, paths[i]) for i in ids], tgts[f], cache, version, method,
                                      layer_name, batch_size, on_batch=bar.advance)
                maps.update({(i, f): got[i] for i in ids})
        per_item, summary = agr.agreement(_LazyOriginal(maps), scored, thr, n_boot=n_boot, seed=seed, groups=groups,
                                          val_boxes=val if val.height else None)
        result["per_item"] = per_item
        metric = pl.when(pl.col("heatmap") == "model").then(pl.col("metric")).otherwise(
            pl.col("metric") + "@" + pl.col("heatmap"))
        return {"metrics": summary.select("finding", metric.alias("metric"), "value", "lo", "hi")}

    run = cached_run(st, "agreement", version, config, compute, force=force)
    overlays = write_gallery(st, run, limit=gallery, loaded=loaded) if gallery else 0  # the model loaded above
    return AgreementResult(run, result.get("per_item"), split, n_scored, left_out, overlays)


def _with_groups(st, rows):
    """The image rows with each image's split and patient group (`Store.image_groups()`)."""
    return rows.join(st.image_groups(), on="id", how="left")


def _split_boxes(box_df, images, split: str):
    """(boxes to score, val boxes that fit the value cut, left-out item counts by split)."""
    import polars as pl

    tagged = box_df.join(images.select("image_id", "split"), on="image_id", how="left").with_columns(
        pl.col("split").fill_null("unsplit"))
    keep = pl.lit(True) if split == "all" else pl.col("split") == split
    scored, val = tagged.filter(keep), tagged.filter(pl.col("split") == "val")
    items = tagged.filter(~keep).select("image_id", "finding", "split").unique()
    counts = dict(items.group_by("split").len().iter_rows())
    left_out = {s: counts.get(s, 0) for s in ("train", "val", "test") if split not in (s, "all")}
    if counts.get("unsplit"):
        left_out["unsplit"] = counts["unsplit"]
    if scored.height == 0:
        by_split = ", ".join(f"{s} {n}" for s, n in left_out.items() if n)
        raise InputError(f"no boxed image is in split {split!r} (boxed items by split: {by_split or 'none'}); "
                         "choose another --split (train, val, test or all)")
    return scored.drop("split"), val.drop("split"), left_out


def _split_fingerprint(images) -> str:
    """A digest of the boxed images' splits and groups: a changed split never reuses a run."""
    frame = images.select("image_id", "split", "group_id").sort("image_id")
    return hashlib.sha256(frame.write_csv().encode()).hexdigest()[:16]


def write_gallery(st, run, limit: int = 12, loaded=None) -> int:
    """Overlay PNGs for an agreement run, in `<store>/heatmaps/<run_id>/` where reports find them.

    One annotated image of the run's split per finding first (then more, up to `limit`), with the
    run's target, method and layer; heatmaps come from the cache the run filled, so this costs no
    forward pass.
    """
    import polars as pl

    cfg = run.config
    boxes = st.boxes()
    if cfg.get("split", "all") != "all" and boxes.height:
        images = _with_groups(st, st.image_files(boxes["image_id"].to_list()))
        held = images.filter(pl.col("split") == cfg["split"])["image_id"].to_list()
        boxes = boxes.filter(pl.col("image_id").is_in(held))
    if boxes.height == 0:
        return 0
    pairs = boxes.select("image_id", "finding").unique(maintain_order=True)
    pairs = pairs.with_columns(pl.int_range(pl.len()).over("finding").alias("rank")).sort("rank", "finding")
    folder = st.path / "heatmaps" / run.run_id
    todo = [(image_id, finding, folder / f"{_slug(image_id)}_{_slug(finding)}.png")
            for image_id, finding, _ in pairs.head(limit).iter_rows()]
    todo = [item for item in todo if not item[2].is_file()]  # a reused run keeps the overlays it has
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        loaded = loaded or _load_model(st, run.version)
    for image_id, finding, png in todo:
        explain(st, image_id, finding, target=cfg["target"], version=run.version, method=cfg["method"],
                layer=cfg["layer"], out=str(png), loaded=loaded)
    return min(limit, pairs.height)
