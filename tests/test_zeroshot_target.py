"""The zero-shot Grad-CAM target explains the score zero-shot evaluates: on synthetic stored vectors
(no model), its value for an image embedding is the pos-neg rule's logit, negative prompts included,
whether built from stored prompt vectors or from prompt texts."""

import numpy as np
import pytest

import synthetic_vectors as synthetic
from embedstore.analyses import zeroshot as zs

torch = pytest.importorskip("torch")
from embedstore.explain.targets import zeroshot_target, zeroshot_target_from_texts  # noqa: E402


@pytest.fixture(scope="module")
def syn():
    return synthetic.make(n=200, n_findings=3, d=24, seed=5)


def _rule_scores(syn, rule: str) -> np.ndarray:
    pv = zs.prompt_vectors(syn.texts, syn.M, syn.findings, "ensemble")
    return zs.scores(syn.X, pv, rule, syn.logit_scale)


def test_target_from_stored_prompts_is_the_pos_neg_score(syn):
    want = _rule_scores(syn, "pos-neg")
    for j, finding in enumerate(syn.findings):
        target = zeroshot_target(finding, syn.texts, syn.M, syn.logit_scale)
        got = target(torch.from_numpy(syn.X)).numpy()
        np.testing.assert_allclose(got, want[:, j], rtol=1e-4, atol=1e-3)


def test_target_from_prompt_texts_is_the_pos_neg_score_and_without_negatives_the_cosine(syn):
    """A model stand-in that encodes each prompt text as its stored vector."""
    row_of = {t: i for i, t in enumerate(syn.texts["text"].to_list())}
    loaded = type("Texts", (), {"encode_texts": lambda self, texts: syn.M[[row_of[t] for t in texts]]})()
    finding = syn.findings[1]
    mine = syn.texts.filter(syn.texts["finding"] == finding)
    positive = mine.filter(mine["polarity"] == "positive")["text"].to_list()
    negative = mine.filter(mine["polarity"] == "negative")["text"].to_list()
    X = torch.from_numpy(syn.X)
    both = zeroshot_target_from_texts(loaded, finding, positive, negative, syn.logit_scale)
    np.testing.assert_allclose(both(X).numpy(), _rule_scores(syn, "pos-neg")[:, 1], rtol=1e-4, atol=1e-3)
    alone = zeroshot_target_from_texts(loaded, finding, positive, None, syn.logit_scale)
    np.testing.assert_allclose(alone(X).numpy(), _rule_scores(syn, "cosine")[:, 1], rtol=1e-4, atol=1e-3)
