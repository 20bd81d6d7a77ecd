"""`embedstore demo`: the whole study offline, on phantom radiographs with the bundled model.

synth -> encode (phantom-clip) -> zero-shot (every rule) -> probe -> separability -> fine-tune
(a new version) -> analyses on it -> paired comparisons -> the seed's table -> Grad-CAM
agreement -> report. Each stage prints one line with its time (tables follow, indented).
Re-running reuses what is already there: the phantoms, the encoded images (content hash) and
every stored run, so a second call takes seconds. It calls the services on its own store
(`out/store`), as the API does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from embedstore.analyses.metrics import metric_value

MODEL = "phantom-clip"


@dataclass
class DemoResult:
    out: Path
    report: Path
    stages: list[tuple[str, float, str]] = field(default_factory=list)  # (stage, seconds, note)

    def to_polars(self):
        """One row per stage: stage, seconds, note."""
        import polars as pl

        return pl.DataFrame(self.stages, schema={"stage": pl.String, "seconds": pl.Float64, "note": pl.String},
                            orient="row")


class _Stages:
    """Runs named stages, printing `stage  seconds  note` as each ends."""

    def __init__(self, echo: Callable[[str], None]):
        self.echo = echo
        self.done: list[tuple[str, float, str]] = []

    def run(self, name: str, fn: Callable[[], str]) -> None:
        start = time.perf_counter()
        note = fn() or ""
        took = time.perf_counter() - start
        self.done.append((name, took, note))
        first, *more = note.splitlines() or [""]
        self.echo(f"{name:<14} {took:7.1f} s  {first}")
        for line in more:
            self.echo(f"{'':<26}{line}")


def demo(out: str | Path = "demo-out", studies: int = 1000, seed: int = 0, size: int = 128,
         epochs: int = 3, model: str = MODEL, shift: str = "site-b", echo: Callable[[str], None] = print) -> DemoResult:
    """Run the study end to end under `out/` (phantoms/, store/, report.html).

    `shift` "site-b" (default) renders the phantoms as another site would, out of phantom-clip's
    training distribution, as IU-Xray is for BiomedCLIP; "none" keeps them in distribution.
    """
    from embedstore.store import Storage

    out = Path(out)
    data, store_dir, report = out / "phantoms", out / "store", out / "report.html"
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(echo)
    stages.run("synth", lambda: _synth(data, studies, seed, size, shift))
    st = Storage(store_dir)
    made: dict[str, str] = {}  # versions the stages create: "base" (encode) and "tuned" (finetune)
    stages.run("encode", lambda: _encode(st, data, model, made))
    base = made["base"]
    stages.run("zeroshot", lambda: _zeroshot(st, base))
    stages.run("probe", lambda: _probe(st, base))
    stages.run("separability", lambda: _separability(st, base))
    stages.run("finetune", lambda: _finetune(st, base, epochs, seed, made))
    tuned = made["tuned"]
    stages.run("analyses v2", lambda: "; ".join([_zeroshot(st, tuned), _probe(st, tuned), _separability(st, tuned)]))
    stages.run("compare", lambda: _compare(st, base, tuned))
    stages.run("seed table", lambda: _seed_table(st, base))
    stages.run("agreement", lambda: _agreement(st, base, data))
    stages.run("report", lambda: _report(st, report))
    return DemoResult(out, report, stages.done)


SYNTH_RECORD = "demo-synth.json"  # the settings the phantoms were made with, beside them


def _synth(data: Path, studies: int, seed: int, size: int, shift: str) -> str:
    import json

    from embedstore.errors import InputError

    settings = {"studies": studies, "seed": seed, "size": size, "shift": shift}
    record = data.parent / SYNTH_RECORD
    if (data / "labels.csv").is_file():  # synth is deterministic: the same settings give the same files
        made = json.loads(record.read_text()) if record.is_file() else None
        if made != settings:
            raise InputError(f"{data} holds phantoms made with other settings ({made or 'unknown'}, not "
                             f"{settings}); give another --out, or delete {data.parent}")
        return f"reusing {data}"
    from embedstore.synth import synth

    s = synth(str(data), studies=studies, seed=seed, size=size, shift=shift)
    record.write_text(json.dumps(settings))
    return f"{s.studies} studies, {s.images} images, {s.boxes} boxes, shift {shift} -> {data}"


def _encode(st, data: Path, model: str, made: dict) -> str:
    from embedstore.encode import encode

    r = encode(st, str(data), model=model, progress=False)
    made["base"] = r.version
    return (f"version {r.version}: {r.encoded} encoded, {r.skipped} already stored, "
            f"{r.failed} failed ({r.images_per_s:.2f} images/s)")


def _zeroshot(st, version: str) -> str:
    import polars as pl

    from embedstore.analyses.zeroshot import zeroshot

    # every rule's threshold fitted on val; raw-dot also as the seed ran it (one prompt, cut at 0)
    metrics = zeroshot(st, version).to_polars()
    auroc = metrics.filter((pl.col("rule") == "pos-neg") & pl.col("finding").is_null() & (pl.col("metric") == "macro_auroc"))
    seed_f1 = dict(_overall(metrics, "macro_f1@default", by="rule")).get("raw-dot")
    return (f"{version} zero-shot pos-neg macro-AUROC {_ci(auroc)}; macro-F1 (val thresholds) "
            + ", ".join(f"{rule} {_num(val)}" for rule, val in _overall(metrics, "macro_f1", by="rule"))
            + f"; raw-dot at the seed's cut 0: {_num(seed_f1)}")


# Macro metrics average the evaluable findings only; on a small demo there may be none.
NO_MACRO = "n/a (no evaluable finding: see the run_findings table)"


def _num(value, fmt: str = ".3f") -> str:
    return "n/a" if value is None or value != value else format(value, fmt)


def _ci(rows) -> str:
    """A metric row's value and interval; `rows` is a filtered metrics frame (empty: no macro)."""
    row = rows.row(0, named=True) if rows.height else {"value": None}
    if row["value"] is None or row["value"] != row["value"]:
        return NO_MACRO
    if row.get("lo") is None or row.get("hi") is None:
        return _num(row["value"])
    return f"{row['value']:.3f} [{row['lo']:.3f}, {row['hi']:.3f}]"


def _probe(st, version: str) -> str:
    import polars as pl

    from embedstore.analyses.probe import probe

    metrics = probe(st, version).to_polars()
    auroc = metrics.filter(pl.col("finding").is_null() & (pl.col("metric") == "macro_auroc"))
    return f"{version} probe macro-AUROC {_ci(auroc)}"


def _separability(st, version: str) -> str:
    from embedstore.analyses.separability import separability

    metrics = separability(st, version).to_polars()
    return f"{version} inter/intra ratio {metric_value(metrics, 'inter_intra_ratio'):.3f}"


def _finetune(st, base: str, epochs: int, seed: int, made: dict) -> str:
    from embedstore.finetune.run import finetune

    result = finetune(st, base, objective="bce", epochs=epochs, lr=3e-4, seed=seed)
    made["tuned"] = result.version
    return (f"{base} -> {result.version} ({result.objective}, {result.epochs_run} epochs, "
            f"val macro-AUROC {result.best_val_auroc:.3f})")


def _compare(st, base: str, tuned: str) -> str:
    """Paired differences of macro AUROC on the same test images, with patient-bootstrap intervals."""
    import polars as pl

    from embedstore.analyses.compare import compare, compare_methods

    lines = []
    for version, methods in ((base, ["zeroshot:pos-neg", "probe"]), (tuned, ["zeroshot:pos-neg", "probe", "finetuned"])):
        df = compare_methods(st, version, methods).filter(pl.col("metric") == "macro_auroc")
        for r in df.iter_rows(named=True):
            lines.append(f"{version}: {r['method_2']} - {r['method_1']}: macro-AUROC {_paired(r)}")
    versions = compare(st, base, tuned).filter((pl.col("kind") == "probe") & (pl.col("metric") == "macro_auroc"))
    lines += [f"probe {tuned} - {base}: macro-AUROC {_paired(r)}" for r in versions.iter_rows(named=True)]
    return "\n".join(lines)


def _paired(r: dict) -> str:
    if r["diff_lo"] is None:
        return f"{_num(r['diff'], '+.3f')}: {r['verdict']}"
    return f"{r['diff']:+.3f} [{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}], p {r['p_value']:.4f}: {r['verdict']}"


def _seed_table(st, base: str) -> str:
    from embedstore.analyses.seed_table import seed_table

    table = seed_table(st, base).drop("missing")
    header = f"{'method':<20} {'version':<8} " + " ".join(f"{c:>14}" for c in table.columns[2:])
    rows = [f"{r[0]:<20} {r[1] or '':<8} " + " ".join(f"{'' if v is None else f'{v:.3f}':>14}" for v in r[2:])
            for r in table.iter_rows()]
    return "\n".join(["the seed's layout (test split; default cuts as the seed ran them)", header, *rows])


def _agreement(st, version: str, data: Path) -> str:
    """Held-out localisation: the probe's Grad-CAM on test-split images (the probe trained on the
    train split) against the size-matched random box and the centre prior."""
    from embedstore.explain.service import agreement

    result = agreement(st, str(data / "boxes.csv"), box_format="canonical", target="probe", version=version)
    m = result.run.metrics
    overall = {r["metric"]: r for r in m.filter(m["finding"].is_null()).iter_rows(named=True)}

    def value(metric: str) -> str:
        row = overall.get(metric)
        return f"{row['value']:.2f}" if row else "n/a"

    def versus(metric: str) -> str:
        row = overall.get(metric)
        interval = f" [{row['lo']:.2f}, {row['hi']:.2f}]" if row and row["lo"] is not None else ""
        return (f"{value(metric)}{interval} vs random box {value(metric + '@random_box')}, "
                f"centre {value(metric + '@centre')}")

    return (f"{result.split} items {result.scored} (left out: {result.left_out_text() or 'none'}); "
            f"pointing {versus('pointing')}; dice@val-threshold {versus('dice@val_threshold')}; "
            f"{result.overlays} overlays")


def _report(st, report: Path) -> str:
    from embedstore.reports.build import build_report

    built = build_report(st, out=report)
    return f"{built.charts} charts, {built.size_bytes / 1e6:.1f} MB -> {built.path}"


def _overall(metrics, name: str, by: str) -> list[tuple[str, float]]:
    """Overall (finding NULL) values of one metric, one per value of the `by` column."""
    import polars as pl

    rows = metrics.filter(pl.col("finding").is_null() & (pl.col("metric") == name))
    return [(str(r[by]), float(r["value"])) for r in rows.iter_rows(named=True)]
