"""The training core on a tiny open_clip model and tiny synthetic data (no phantoms needed)."""

from __future__ import annotations

import math

import numpy as np
import open_clip
import pytest
import torch

from embedstore.errors import InputError
from finetune_helpers import torch_threads
from embedstore.finetune.data import PairDataset, Text, match_matrix
from embedstore.analyses.metrics import macro_auroc
from embedstore.finetune.loop import TrainConfig, set_trainable, train, warmup_cosine
from embedstore.finetune.objectives import (
    BCEObjective,
    ContrastiveObjective,
    bce_loss,
    clip_loss,
    pos_weight_from_labels,
)

FINDINGS = ["Spot", "Bar"]
PROMPTS = {"Spot": (["a bright spot"], ["no spot"]), "Bar": (["a dark bar"], ["no bar"])}


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg={"image_size": 16, "patch_size": 8, "width": 16, "layers": 2, "head_width": 8},
        text_cfg={"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
    )
    return model, open_clip.tokenizer.SimpleTokenizer(context_length=8)


def tiny_data(n: int, seed: int, texts: bool = True) -> PairDataset:
    """16-px images: "Spot" = a bright square top left, "Bar" = a dark band at the bottom."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 2)) < 0.4).astype(np.float32)
    pix = rng.integers(90, 140, size=(n, 16, 16))
    pix[labels[:, 0] == 1, 2:6, 2:6] = 250
    pix[labels[:, 1] == 1, 12:15, :] = 10
    cands = None
    if texts:
        cands = []
        for y in labels:
            row = [Text(PROMPTS[f][0 if y[k] else 1][0], np.where(np.arange(2) == k, y[k], np.nan))
                   for k, f in enumerate(FINDINGS)]
            cands.append(row)
    return PairDataset(torch.from_numpy(pix.astype(np.uint8)), labels, cands, augment=texts, seed=seed)


def contrastive(seed: int = 0):
    model, tok = tiny_model(seed)
    return ContrastiveObjective(model, tok, PROMPTS)


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=2, lr=2e-3, batch_size=16, warmup=0.2, patience=5, seed=3)
    base.update(kw)
    return TrainConfig(**base)


# --- losses -----------------------------------------------------------------------------------


def test_bce_with_pos_weight_matches_the_formula_and_skips_unknown_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=g)
    labels = torch.tensor([[1, 0, -1], [0, 0, 1], [1, 1, 0], [0, -1, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.float32)
    w = pos_weight_from_labels(labels.numpy())
    # counts by hand: finding 0 has 3 pos / 3 neg, finding 1: 1 / 4, finding 2: 2 / 3
    assert torch.allclose(w, torch.tensor([1.0, 4.0, 1.5]))
    got = bce_loss(logits, labels, w)
    total, n = 0.0, 0
    for i in range(6):
        for f in range(3):
            y = float(labels[i, f])
            if y < 0:
                continue
            p = 1 / (1 + math.exp(-float(logits[i, f])))
            total += -(float(w[f]) * y * math.log(p) + (1 - y) * math.log(1 - p))
            n += 1
    assert got.item() == pytest.approx(total / n, rel=1e-5)
    known = labels >= 0
    ref = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[known], labels[known], pos_weight=w.expand(6, 3)[known])
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


def _xent(row: list[float], target: list[float]) -> float:
    lse = math.log(sum(math.exp(v) for v in row))
    return -sum(t * (v - lse) for v, t in zip(row, target))


def test_clip_loss_equals_a_hand_computed_value():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    s = 2.0
    logits = [[2.0, 1.2], [0.0, 1.6]]  # s * img @ txt.T
    cols = [[2.0, 0.0], [1.2, 1.6]]
    expect = (_xent(logits[0], [1, 0]) + _xent(logits[1], [0, 1])) / 2
    expect = (expect + (_xent(cols[0], [1, 0]) + _xent(cols[1], [0, 1])) / 2) / 2
    assert clip_loss(img, txt, s).item() == pytest.approx(expect, rel=1e-6)
    # image 0 also matches text 1 (e.g. the same "no finding" sentence): its target is split
    same = torch.tensor([[False, True], [False, False]])
    expect = (_xent(logits[0], [0.5, 0.5]) + _xent(logits[1], [0, 1])) / 2
    expect = (expect + (_xent(cols[0], [1, 0]) + _xent(cols[1], [0.5, 0.5])) / 2) / 2
    assert clip_loss(img, txt, s, same=same).item() == pytest.approx(expect, rel=1e-6)


def test_match_matrix_follows_label_conditions():
    labels = np.array([[1, 0], [0, 0]], dtype=np.float32)
    cond = np.array([[1, np.nan], [np.nan, 0]], dtype=np.float32)  # "spot", "no bar"
    assert match_matrix(labels, cond).tolist() == [[True, True], [False, True]]


def test_macro_auroc_matches_sklearn_and_skips_one_class_findings():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    labels = (rng.random((40, 3)) < 0.5).astype(float)
    labels[:, 2] = 0
    labels[0, 0] = -1
    scores = rng.random((40, 3)) + labels * 0.3
    mean, per = macro_auroc(scores, labels)
    keep = labels[:, 0] >= 0
    a0 = roc_auc_score(labels[keep, 0], scores[keep, 0])
    a1 = roc_auc_score(labels[:, 1], scores[:, 1])
    assert per[2] is None
    assert per[0] == pytest.approx(a0) and mean == pytest.approx((a0 + a1) / 2)


# --- schedule and freezing ----------------------------------------------------------------------


def test_schedule_warms_up_then_decays_to_zero():
    f = warmup_cosine(total_steps=20, warmup_steps=4)
    values = [f(i) for i in range(21)]
    assert values[:4] == sorted(values[:4]) and values[0] < values[3] == 1.0
    tail = values[3:]
    assert all(a >= b for a, b in zip(tail, tail[1:])) and tail[-1] == pytest.approx(0.0, abs=1e-9)
    # and the loop really drives the optimizer with it: lr rises then falls
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[3] and lrs[3] > lrs[10] > lrs[19]


def test_freezing_vision_leaves_the_text_tower_bit_identical(tmp_path):
    obj = contrastive()
    before = {k: v.clone() for k, v in obj.model.state_dict().items()}
    train(obj, tiny_data(48, 1), tiny_data(32, 2), cfg(epochs=1, train="vision"), tmp_path)
    after = obj.model.state_dict()
    text = [k for k in before if not k.startswith("visual.")]
    assert "token_embedding.weight" in text and "text_projection" in text
    assert all(torch.equal(before[k], after[k]) for k in text)
    assert not torch.equal(before["visual.conv1.weight"], after["visual.conv1.weight"])


def test_last_n_blocks_trains_only_the_tail_of_the_image_tower():
    model, _ = tiny_model()
    names = set_trainable(model, "last-1-blocks")
    assert any(n.startswith("visual.transformer.resblocks.1.") for n in names)
    assert not any(n.startswith(("visual.transformer.resblocks.0.", "visual.conv1", "token_embedding")) for n in names)
    assert "visual.proj" in names
    with pytest.raises(InputError, match="last-N-blocks"):
        set_trainable(model, "last-0-blocks")
    with pytest.raises(InputError, match="only 2 blocks"):
        set_trainable(model, "last-3-blocks")


# --- resume -------------------------------------------------------------------------------------


def test_run_stopped_after_epoch_1_resumes_at_epoch_2(tmp_path):
    obj = contrastive()
    first = train(obj, tiny_data(48, 1), tiny_data(32, 2), cfg(epochs=1), tmp_path)
    assert first.epochs_run == [1] and first.resumed_from == 0
    seen = []
    obj2 = contrastive(seed=99)  # a fresh process would build the model anew
    second = train(obj2, tiny_data(48, 1), tiny_data(32, 2), cfg(epochs=2), tmp_path, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [2]  # epoch 1 was not trained again
    assert second.resumed_from == 1 and second.epochs_run == [2]
    assert [r["epoch"] for r in second.history] == [1, 2]
    assert second.history[0] == first.history[0]


class Killed(Exception):
    pass


def _kill_after_first(row):
    if row["epoch"] == 1:
        raise Killed


def test_killed_run_resumed_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    straight = contrastive()
    train(straight, tiny_data(48, 1), tiny_data(32, 2), cfg(epochs=2, patience=9), tmp_path / "a")
    killed = contrastive()
    with pytest.raises(Killed):
        train(killed, tiny_data(48, 1), tiny_data(32, 2), cfg(epochs=2, patience=9), tmp_path / "b",
              on_epoch=_kill_after_first)
    resumed = contrastive(seed=5)
    res = train(resumed, tiny_data(48, 1), tiny_data(32, 2), cfg(epochs=2, patience=9), tmp_path / "b")
    assert res.epochs_run == [2]
    # compare the last epoch's weights (the best may be either epoch; both runs keep epoch 2)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "epoch-2" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "epoch-2" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_other_settings_is_refused(tmp_path):
    train(contrastive(), tiny_data(48, 1), tiny_data(32, 2), cfg(epochs=1), tmp_path)
    with pytest.raises(InputError, match="lr"):
        train(contrastive(), tiny_data(48, 1), tiny_data(32, 2), cfg(epochs=2, lr=1e-4), tmp_path)


# --- objectives end to end ---------------------------------------------------------------------


def test_bce_objective_learns_the_easy_findings(tmp_path):
    model, _ = tiny_model()
    data = tiny_data(96, 1, texts=False)
    obj = BCEObjective(model.visual, 16, 2, pos_weight_from_labels(data.labels.numpy()))
    res = train(obj, data, tiny_data(48, 2, texts=False), cfg(epochs=6, lr=3e-3, train="vision"), tmp_path)
    assert res.best_auroc > 0.8, res.history
    assert res.history[res.best_epoch - 1]["val_auroc"] == res.best_auroc


def test_zero_shot_head_starts_at_the_pos_neg_zero_shot_scores():
    from embedstore.finetune.objectives import ImageClassifier, zero_shot_head
    from embedstore.models.zeroshot import pos_neg_logits

    model, tok = tiny_model()
    model.eval()
    images = tiny_data(8, seed=3, texts=False).collate([{"index": i} for i in range(8)])["images"]
    head = ImageClassifier(model.visual, 16, 2, normalize=True, init=zero_shot_head(model, tok, PROMPTS)).eval()
    def averaged(texts):  # CLIP's prompt ensemble, by hand: the mean of unit vectors, re-normalised
        unit = torch.nn.functional.normalize(model.encode_text(tok(list(texts))), dim=-1)
        return torch.nn.functional.normalize(unit.mean(0), dim=0)

    with torch.no_grad():
        pos = torch.stack([averaged(p) for p, _ in PROMPTS.values()])
        neg = torch.stack([averaged(n) for _, n in PROMPTS.values()])
        expected = torch.sigmoid(pos_neg_logits(model.encode_image(images), pos, neg, model.logit_scale.exp()))
        got = torch.sigmoid(head(images))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert got.std() > 0  # not a constant: the check could fail
