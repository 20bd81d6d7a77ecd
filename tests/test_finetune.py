"""`embedstore finetune`: a new version beside its parent, re-encoded, resumable after SIGKILL.

The model is the tiny open_clip CLIP of store_helpers (64 px), exported once per session to a
`local-dir:` folder (conftest.py's `tiny_model`), so the parent version is loaded through the
registry as a real one would be. The images are
64 px noise with label-dependent blobs at random places: "Cardiomegaly" a bright 14 px square,
"Effusion" a dark 10 px square. The randomly initialised tower's vectors separate them only
partly (a logistic regression on them reaches about 0.8 validation macro AUROC), a tuned tower
almost fully.

"Raises validation macro AUROC over its parent" is tested as: the fine-tuned head's scores
(stored in the `finetune` run) have a higher macro AUROC on the val split, and on the held-out
test split, than a logistic regression fitted by scikit-learn on the parent's stored vectors of
the same train images (the best a linear head on the parent's frozen tower does), by > 0.05.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import torch  # noqa: E402

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from finetune_helpers import (  # noqa: E402
    kill_after_first_epoch, kill_while_writing_version, parent_snapshot, torch_threads)

FINDINGS = ["Cardiomegaly", "Effusion"]
N_IMAGES = 160  # split train / train / val / test by index: 80 / 40 / 40
ARGS = dict(objective="bce", train="all", epochs=4, lr=2e-3, batch_size=16, patience=10, seed=1, device="cpu",
            workers=0)


@pytest.fixture(scope="module", autouse=True)  # before the module's fixtures train anything
def _one_thread():
    with torch_threads(1):
        yield


def blob_dataset(folder: Path, n: int, seed: int = 0):
    """PNGs with label-dependent blobs at random places, and a Dataset over them."""
    from PIL import Image

    from embedstore.data.records import Dataset, ImageRecord

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        a, b = int(rng.random() < 0.4), int(rng.random() < 0.4)
        arr = rng.normal(120, 25, (64, 64))
        if a:
            x, y = rng.integers(4, 44, 2)
            arr[y:y + 14, x:x + 14] += 70
        if b:
            x, y = rng.integers(4, 50, 2)
            arr[y:y + 10, x:x + 10] -= 70
        path = folder / f"im{i:03d}.png"
        Image.fromarray(arr.clip(0, 255).astype(np.uint8), mode="L").save(path)
        recs.append(ImageRecord(image_id=f"IM{i:03d}", path=str(path), study_id=f"S{i}", patient_id=f"P{i}",
                                view="frontal", projection="PA", split=("train", "train", "val", "test")[i % 4],
                                labels={"Cardiomegaly": a, "Effusion": b}, source="manifest",
                                findings="heart is enlarged" if a else "heart size normal",
                                impression="effusion" if b else "no effusion"))
    return Dataset(name="blobs", source=str(folder), scheme="test", findings=FINDINGS, records=recs)


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model):
    """A store with one encoded version (v1) of the session's tiny model (conftest.py)."""
    from store_helpers import open_store as Store

    root = tmp_path_factory.mktemp("ft-base")
    Store(root / "store").encode(blob_dataset(root / "img", N_IMAGES), model=tiny_model, batch_size=32, workers=0)
    return root


def copy_store(base: Path, dest: Path):
    from store_helpers import open_store as Store

    shutil.copytree(base / "store", dest)
    return Store(dest)


def _macro_auroc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(np.mean([roc_auc_score(y[:, j], s[:, j]) for j in range(y.shape[1])]))


@pytest.fixture(scope="module")
def tuned(base, tmp_path_factory):
    """The store after one uninterrupted bce fine-tune, the parent snapshot before it, the result."""
    st = copy_store(base, tmp_path_factory.mktemp("ft-run") / "store")
    before = parent_snapshot(st)
    result = st.finetune("v1", **{k: v for k, v in ARGS.items() if k not in ("objective", "train")},
                         objective=ARGS["objective"], train=ARGS["train"])
    return st, before, result


def test_bce_finetune_writes_a_new_version_and_leaves_the_parent_alone(tuned):
    from embedstore.models import load_model

    st, before, r = tuned
    assert (r.version, r.parent, r.reused, r.resumed_from, r.trained_now) == ("v2", "v1", False, 0, [1, 2, 3, 4])
    versions = st.versions()
    row = versions.filter(versions["version"] == "v2").row(0, named=True)
    assert (row["parent"], row["kind"], row["images"]) == ("v1", "finetune", N_IMAGES)
    # parent: rows, texts, recorded checksum and the index file itself unchanged
    after = parent_snapshot(st)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert after[2] == before[2]
    np.testing.assert_array_equal(after[3], before[3])
    assert after[4:] == before[4:]
    # the new version: every parent image, different vectors, its own current index
    ids2, X2 = st.image_vectors("v2")
    np.testing.assert_array_equal(ids2, before[0])
    assert np.abs(X2 - before[1]).max() > 0.05
    np.testing.assert_allclose(np.linalg.norm(X2, axis=1), 1.0, atol=1e-4)
    assert st.index_is_current("v2") and st.load_index("v2").ntotal == N_IMAGES
    # prompts re-encoded with the (here also tuned) text tower: the same texts, self-contained
    texts2, _ = st.text_vectors("v2")
    assert sorted(texts2["text_hash"].to_list()) == sorted(before[2])
    # the checkpoint rebuilds through the registry and gives the stored vectors
    ckpt = st.path / "checkpoints" / "v2"
    assert {"open_clip_config.json", "open_clip_model.safetensors", "head.safetensors", "finetune.json"} <= {
        p.name for p in ckpt.iterdir()}
    lm = load_model(f"local-dir:{ckpt}")
    path = st.images().filter(st.images()["id"] == int(ids2[5]))["path"][0]
    from embedstore.data.images import read_image

    x = lm.preprocess(read_image(path).convert("RGB")).unsqueeze(0)
    np.testing.assert_allclose(lm.encode_images(x)[0], X2[5], atol=1e-4)
    # nothing left of the work folder
    assert not [p for p in (st.path / "checkpoints").iterdir() if p.name.startswith(".work")]


def _head_scores(st, version: str, ids: np.ndarray) -> np.ndarray:
    with st.connect() as con:
        df = con.sql("""SELECT s.id, s.finding, s.score FROM image_scores s JOIN runs r USING (run_id)
                        WHERE r.version = ? AND r.kind = 'finetune'""", params=[version]).pl()
    pos = {int(i): k for k, i in enumerate(ids)}
    S = np.full((len(ids), len(FINDINGS)), np.nan)
    for i, f, s in df.iter_rows():
        if i in pos:
            S[pos[i], FINDINGS.index(f)] = s
    return S


def test_bce_head_beats_a_linear_head_on_the_parent_tower(tuned):
    from sklearn.linear_model import LogisticRegression

    st, before, r = tuned
    ids, X1 = before[0], before[1]
    split = dict(zip(st.images()["id"].to_list(), st.images()["split"].to_list()))
    sp = np.array([split[int(i)] for i in ids])
    Y = st.label_matrix(ids, FINDINGS)
    tr, va, te = sp == "train", sp == "val", sp == "test"
    S = _head_scores(st, "v2", ids)
    assert np.isfinite(S).all()  # every image of the version has its head logits
    parent = np.column_stack([LogisticRegression(C=10, max_iter=5000).fit(X1[tr], Y[tr, j]).decision_function(X1)
                              for j in range(len(FINDINGS))])
    parent_val, tuned_val = _macro_auroc(Y[va], parent[va]), _macro_auroc(Y[va], S[va])
    parent_test, tuned_test = _macro_auroc(Y[te], parent[te]), _macro_auroc(Y[te], S[te])
    assert tuned_val > parent_val + 0.05, (parent_val, tuned_val)
    assert tuned_test > parent_test + 0.05, (parent_test, tuned_test)
    # the loop's own best validation AUROC is the one of the stored head (best epoch's weights)
    assert r.best_val_auroc == pytest.approx(tuned_val, abs=1e-4)
    # the run's test metrics agree with scikit-learn on the stored scores
    m = st.sql(f"SELECT finding, value FROM metrics WHERE run_id = '{r.run_id}' AND metric = 'auroc'")
    from sklearn.metrics import roc_auc_score

    for f, v in m.iter_rows():
        j = FINDINGS.index(f)
        assert v == pytest.approx(roc_auc_score(Y[te, j], S[te, j]), abs=1e-9)


def test_head_and_model_of_a_version_load_for_query_and_explain(tuned):
    from embedstore.data.images import read_image
    from embedstore.models import load_model
    from embedstore.models.heads import load_head

    st, before, r = tuned
    lm = load_model(st.version("v2"))
    head, findings = load_head(st.version("v2"))
    assert findings == FINDINGS
    ids = before[0][:3]
    paths = st.images().filter(st.images()["id"].is_in(ids.tolist())).sort("id")["path"].to_list()
    x = torch.stack([lm.preprocess(read_image(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        logits = head(lm.model.encode_image(x)).numpy()
    np.testing.assert_allclose(logits, _head_scores(st, "v2", ids), atol=1e-4)
    from embedstore.errors import InputError

    with pytest.raises(InputError, match="no fine-tuned classifier head"):
        load_head(st.version("v1"))


def test_a_random_head_reads_the_raw_tower_output(base, tmp_path):
    from embedstore.data.images import read_image
    from embedstore.models import load_model
    from embedstore.models.heads import load_head
    from embedstore.models.heads import UnitInputHead

    st = copy_store(base, tmp_path / "store")
    r = st.finetune("v1", objective="bce", train="vision", epochs=1, lr=2e-3, batch_size=16, seed=0, device="cpu",
                    workers=0, head_init="random")
    head, _ = load_head(st.version(r.version))
    assert isinstance(head, torch.nn.Linear) and "head_init" not in st.version(r.version).model_record["finetune"]
    lm = load_model(st.version(r.version))
    ids = st.image_vectors(r.version)[0][:3]
    paths = st.images().filter(st.images()["id"].is_in(ids.tolist())).sort("id")["path"].to_list()
    x = torch.stack([lm.preprocess(read_image(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        raw = lm.model.encode_image(x)
        np.testing.assert_allclose(head(raw).numpy(), _head_scores(st, r.version, ids), atol=1e-4)
        unit = UnitInputHead(head.in_features, head.out_features)
        unit.load_state_dict(head.state_dict())
        assert not np.allclose(unit(raw).numpy(), head(raw).numpy(), atol=1e-3)  # normalising would differ


def test_same_arguments_reuse_the_finished_version(tuned):
    st, _, r = tuned
    again = st.finetune("v1", **{k: v for k, v in ARGS.items() if k not in ("objective", "train")},
                        objective=ARGS["objective"], train=ARGS["train"])
    assert (again.version, again.reused, again.trained_now, again.run_id) == ("v2", True, [], r.run_id)
    assert st.versions().height == 2


@pytest.mark.slow  # a fine-tune in a subprocess, then resumed: ~6 s
def test_a_run_killed_after_its_first_epoch_resumes_there(base, tuned, tmp_path):
    st = copy_store(base, tmp_path / "store")
    state = kill_after_first_epoch(st.path, ARGS)
    assert state["epoch"] == 1
    assert st.versions().height == 1  # no half version: it is created only after training

    r = st.finetune("v1", **{k: v for k, v in ARGS.items() if k not in ("objective", "train")},
                    objective=ARGS["objective"], train=ARGS["train"])
    assert (r.version, r.resumed_from, r.trained_now, r.epochs_run) == ("v2", 1, [2, 3, 4], 4)
    assert r.history[0] == state["history"][0]  # epoch 1 comes from the killed run
    # the same result as the uninterrupted run: resume restores weights, optimizer and RNG
    ref_st, _, ref = tuned
    assert [h["val_auroc"] for h in r.history] == pytest.approx([h["val_auroc"] for h in ref.history], abs=1e-6)
    np.testing.assert_allclose(st.image_vectors("v2")[1], ref_st.image_vectors("v2")[1], atol=1e-5)


def test_contrastive_keeps_zero_shot_working_on_the_new_version(base, tmp_path, capsys):
    st = copy_store(base, tmp_path / "store")
    r = st.finetune("v1", objective="contrastive", train="vision", epochs=2, lr=2e-3, batch_size=16, seed=0,
                    device="cpu", workers=0)
    assert r.version == "v2" and st.version_row("v2")["parent"] == "v1"
    # train=vision leaves the text tower alone: the prompts' vectors are the parent's, re-encoded
    t1, M1 = st.text_vectors("v1")
    t2, M2 = st.text_vectors("v2")
    assert t1["text_hash"].to_list() == t2["text_hash"].to_list()
    np.testing.assert_allclose(M1, M2, atol=1e-5)
    assert np.abs(st.image_vectors("v2")[1] - st.image_vectors("v1")[1]).max() > 0.05
    assert not (st.path / "checkpoints" / "v2" / "head.safetensors").exists()
    metrics = st.zeroshot("v2", rule="pos-neg", n_boot=50).to_polars()
    assert metrics.filter(metrics["metric"] == "macro_auroc").height == 1
    # a fine-tuned version is itself a parent (its model loads from its checkpoint), from the CLI
    from embedstore.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["finetune", "--from-version", "v2", "--objective", "bce", "--train", "last-1-blocks", "--epochs", "1",
              "--lr", "0.002", "--batch-size", "16", "--device", "cpu", "--workers", "0", "--store", str(st.path),
              "--format", "json"])
    assert exc.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["version"], out["parent"], out["objective"], out["trained_now"]) == ("v3", "v2", "bce", "1")
    assert st.version_row("v3")["parent"] == "v2"
    # last-1-blocks leaves the first block of the image tower as it was in v2
    from safetensors.torch import load_file

    w2 = load_file(str(st.path / "checkpoints/v2/open_clip_model.safetensors"))
    w3 = load_file(str(st.path / "checkpoints/v3/open_clip_model.safetensors"))
    first = [k for k in w2 if k.startswith("visual.transformer.resblocks.0.")]
    last = [k for k in w2 if k.startswith("visual.transformer.resblocks.1.")]
    assert first and all(torch.equal(w2[k], w3[k]) for k in first)
    assert any(not torch.equal(w2[k], w3[k]) for k in last)


def test_bad_arguments_fail_before_anything_is_written(base, tmp_path):
    from embedstore.errors import InputError

    st = copy_store(base, tmp_path / "store")
    with pytest.raises(InputError, match="--objective"):
        st.finetune("v1", objective="mse", device="cpu")
    with pytest.raises(InputError, match="last-N-blocks"):
        st.finetune("v1", train="some", device="cpu")
    with pytest.raises(InputError, match="only 2 blocks"):
        st.finetune("v1", train="last-3-blocks", epochs=1, device="cpu", workers=0)
    assert st.versions().height == 1
    assert not [p for p in st.path.glob("checkpoints/v*")]


ONE_EPOCH = dict(objective="bce", train="vision", epochs=1, lr=2e-3, batch_size=16, seed=0, device="cpu", workers=0)


def _finetune_failing_at(st, monkeypatch, owner, name: str) -> None:
    """`st.finetune("v1", **ONE_EPOCH)` with `owner.name` raising, as a run killed there would stop."""
    def boom(*a, **k):
        raise RuntimeError("killed")

    with monkeypatch.context() as m:
        m.setattr(owner, name, boom)
        with pytest.raises(RuntimeError, match="killed"):
            st.finetune("v1", **ONE_EPOCH)


def test_a_run_that_fails_while_writing_its_version_finishes_it_when_run_again(base, tmp_path, monkeypatch):
    """Killed after the version row and its vectors were written but before its run: the next call
    completes that same version (head logits recomputed for images it no longer re-encodes)."""
    from embedstore.finetune import run as commands

    st = copy_store(base, tmp_path / "store")
    _finetune_failing_at(st, monkeypatch, commands, "_write_run")
    args = ONE_EPOCH
    assert st.versions().height == 2 and st.image_vectors("v2")[0].size == N_IMAGES
    assert st.runs().filter(st.runs()["kind"] == "finetune").height == 0  # not complete yet
    assert st.versions()["status"].to_list() == ["complete", "building"]
    assert st.resolve_version(None) == "v1"  # a half-written version never becomes the default
    report = st.verify("v2")
    assert report.filter(report["check"] == "complete")["ok"].to_list() == [False]
    assert "embedstore versions --drop v2" in report.filter(report["check"] == "complete")["detail"][0]
    r = st.finetune("v1", **args)
    assert (r.version, r.encoded, r.trained_now, r.reused) == ("v2", 0, [], False)
    assert st.versions().height == 2
    S = _head_scores(st, "v2", st.image_vectors("v2")[0])
    assert np.isfinite(S).all()
    assert st.verify("v2")["ok"].all() and st.resolve_version(None) == "v2"


@pytest.mark.slow  # a fine-tune in a subprocess, SIGKILLed, then finished: ~10 s
def test_a_finetune_killed_while_writing_its_version_is_never_the_default(base, tmp_path, capsys):
    """SIGKILLed once its new version's vectors are committed: v2 stays `building`, the default and `query`
    stay on v1, `verify` fails on v2 naming the fix; the same command again completes v2."""
    from embedstore.cli import main

    st = copy_store(base, tmp_path / "store")
    args = ONE_EPOCH
    kill_while_writing_version(st.path, args)
    assert st.versions()["status"].to_list() == ["complete", "building"]
    assert st.image_vectors("v2")[0].size > 0  # its vectors committed, its texts, index and run not
    assert st.resolve_version(None) == "v1"
    with pytest.raises(SystemExit) as exc:
        main(["verify", "--store", str(st.path)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "verify failed: version v2: complete: building" in err, err
    r = st.finetune("v1", **args)
    assert r.version == "v2" and st.versions()["status"].to_list() == ["complete", "complete"]
    assert st.verify()["ok"].all() and st.resolve_version(None) == "v2"


def test_a_run_killed_after_its_run_was_written_is_completed_by_the_next_call(base, tmp_path, monkeypatch):
    """Stopped between writing its `finetune` run and marking v2 complete: the next call reuses v2
    (nothing is trained again) and completes it, so `verify` and the default follow."""
    from embedstore.store import Storage

    st = copy_store(base, tmp_path / "store")
    _finetune_failing_at(st, monkeypatch, Storage, "complete_version")
    args = ONE_EPOCH
    assert st.versions()["status"].to_list() == ["complete", "building"] and st.resolve_version(None) == "v1"
    r = st.finetune("v1", **args)
    assert (r.version, r.reused, r.trained_now) == ("v2", True, [])
    assert st.versions()["status"].to_list() == ["complete", "complete"] and st.resolve_version(None) == "v2"


def test_a_finetuned_version_is_never_scored_on_the_images_it_was_fitted_on(tuned, tmp_path):
    """fit_images holds the ids v2 trained and early-stopped on; zeroshot refuses to score v2 there
    (calibrating on val is fine), its parent can be; a version tuned from v2 inherits v2's ids."""
    from embedstore.errors import InputError

    st, _, r = tuned
    meta = st.images()
    by_split = {s: np.sort(meta.filter(meta["split"] == s)["id"].to_numpy()) for s in ("train", "val", "test")}
    fitted = st.fitted_ids("v2")
    np.testing.assert_array_equal(fitted["train"], by_split["train"])
    np.testing.assert_array_equal(fitted["val"], by_split["val"])
    assert all(len(ids) == 0 for ids in st.fitted_ids("v1").values())
    with pytest.raises(InputError, match=r"version v2 on 80 image\(s\) it .* trained on and 0 it was early-stopped on") as err:
        st.zeroshot("v2", rule="pos-neg", split="train", n_boot=20)
    assert "\n" not in str(err.value) and "score the test split" in str(err.value)
    with pytest.raises(InputError, match=r"version v2 on 0 image\(s\) .* and 40 it was early-stopped on"):
        st.zeroshot("v2", rule="pos-neg", split="val", calibrate_on=None, n_boot=20)
    assert st.zeroshot("v1", rule="pos-neg", split="train", n_boot=20).to_polars().height > 0  # the parent never saw them
    assert st.zeroshot("v2", rule="pos-neg", calibrate_on="val", n_boot=20).to_polars().height > 0

    # A child of v2 that (wrongly) trained on one test image: refused on test by every analysis,
    # and on train through its parent v2.
    child = copy_store(Path(st.path).parent, tmp_path / "store")
    leak = by_split["test"][:1]
    v3 = child.create_version("v2", {"name": "child", "embed_dim": 32}, None, "fp32", "finetune",
                              fit_ids={"train": leak})
    ids, X = child.image_vectors("v2")
    child.add_image_vectors(v3, ids, [f"h{i}" for i in ids], X)
    texts, M = child.text_vectors("v2")
    child.add_text_vectors(v3, texts, M)
    fitted3 = child.fitted_ids(v3)
    np.testing.assert_array_equal(fitted3["train"], np.sort(np.r_[by_split["train"], leak]))
    for run in (lambda: child.zeroshot(v3, rule="pos-neg", n_boot=20), lambda: child.probe(v3, n_boot=20),
                lambda: child.separability(v3)):
        with pytest.raises(InputError, match=rf"version {v3} on 1 image\(s\)"):
            run()
    with pytest.raises(InputError, match=rf"version {v3} on 80 image\(s\)"):
        child.zeroshot(v3, rule="pos-neg", split="train", n_boot=20)
