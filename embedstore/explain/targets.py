"""The scalar Grad-CAM differentiates, computed from the image tower's raw embedding.

grad-cam calls a target once per image with that image's model output (here the (D,) image
embedding) and sums the results before `backward`, so every target below works on (D,) as well
as (B, D).

- `ZeroShotTarget`: the pos-neg logit `logit_scale * (cos(z, t_pos) - cos(z, t_neg))`, the
  score `embedstore zeroshot --rule pos-neg` evaluates, so the heatmap explains the decision that
  was scored (a cosine with the positive prompt alone would explain a different score). The
  prompt vectors come from `embedstore.analyses.zeroshot.prompt_vectors(..., "ensemble")`, the one
  place a finding's prompts are averaged.
- `ProbeTarget`: a linear probe's logit w.z + b on the L2-normalised embedding (the store keeps
  normalised vectors, which is what the probes were fitted on).
- `HeadTarget`: one output of a fine-tuned head module.

`cache_id` names the target's weights so cached heatmaps go stale when the weights change.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from embedstore.errors import InputError


def _digest(*arrays: Any) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float32)).tobytes())
    return h.hexdigest()[:12]


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    if v.ndim != 1:
        raise ValueError(f"a prompt vector has shape {v.shape}; pass one (d,) vector per polarity "
                         "(average templates with embedstore.analyses.zeroshot.prompt_vectors)")
    return v / max(float(np.linalg.norm(v)), 1e-12)


class Target:
    """Base class: `score(embedding) -> scalar per image`; `kind`, `finding`, `cache_id`."""

    kind = "target"

    def __init__(self, finding: str):
        self.finding = finding

    def score(self, emb):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, emb):
        return self.score(emb)

    @property
    def cache_id(self) -> str:
        return self.kind


class ZeroShotTarget(Target):
    """`logit_scale * (cos(z, positive) - cos(z, negative))`; without `negative`, the scaled cosine
    with `positive` (only for prompts given as texts, see `zeroshot_target_from_texts`).

    `positive` / `negative` are ONE vector each (d,): build them with `prompt_vectors`, which
    averages a finding's templates; a vector is re-normalised here, never averaged.
    """

    kind = "zeroshot"

    def __init__(self, finding: str, positive: np.ndarray, negative: np.ndarray | None = None,
                 logit_scale: float = 1.0):
        super().__init__(finding)
        self.positive = _unit(positive)
        self.negative = None if negative is None else _unit(negative)
        self.logit_scale = float(logit_scale)

    def score(self, emb):
        import torch.nn.functional as F

        from embedstore.models.zeroshot import pos_neg_logits

        z = F.normalize(emb, dim=-1)
        if self.negative is None:
            return self.logit_scale * (z @ _tensor(self.positive, z))
        return pos_neg_logits(z, _tensor(self.positive[None], z), _tensor(self.negative[None], z),
                              self.logit_scale)[..., 0]

    @property
    def cache_id(self) -> str:
        parts = [self.positive] if self.negative is None else [self.positive, self.negative]
        return f"zeroshot-{_digest(*parts, [self.logit_scale])}"


class ProbeTarget(Target):
    kind = "probe"

    def __init__(self, finding: str, coef: np.ndarray, intercept: float, normalize: bool = True):
        super().__init__(finding)
        self.coef = np.asarray(coef, dtype=np.float32).reshape(-1)
        self.intercept = float(intercept)
        self.normalize = normalize

    def score(self, emb):
        import torch.nn.functional as F

        z = F.normalize(emb, dim=-1) if self.normalize else emb
        return z @ _tensor(self.coef, z) + self.intercept

    @property
    def cache_id(self) -> str:
        return f"probe-{_digest(self.coef, [self.intercept, float(self.normalize)])}"


class HeadTarget(Target):
    """Output `index` of a fine-tuned head (a torch module on the image embedding)."""

    kind = "finetuned"

    def __init__(self, finding: str, head, index: int, normalize: bool = False, weights_id: str = ""):
        super().__init__(finding)
        self.head, self.index, self.normalize, self.weights_id = head, int(index), normalize, weights_id

    def score(self, emb):
        import torch.nn.functional as F

        z = F.normalize(emb, dim=-1) if self.normalize else emb
        self.head.to(z.device)
        return self.head(z)[..., self.index]

    @property
    def cache_id(self) -> str:
        if not self.weights_id:
            self.weights_id = _digest(*[p.detach().cpu().numpy() for p in self.head.parameters()])
        return f"finetuned-{self.weights_id}-{self.index}"


def _tensor(a: np.ndarray, like):
    import torch

    return torch.as_tensor(a, dtype=like.dtype, device=like.device)


# ---- builders ------------------------------------------------------------------------------

def zeroshot_target(finding: str, prompts, matrix: np.ndarray, logit_scale: float,
                    version: str | None = None) -> ZeroShotTarget:
    """The pos-neg logit target from stored prompts: `prompts` (polars, columns finding /
    polarity[/ template]; row i <-> matrix[i]), as returned by `Store.text_vectors(version)`, and
    the version's logit scale. A finding without a negative prompt is an InputError, as for
    `embedstore zeroshot --rule pos-neg`."""
    from embedstore.analyses.zeroshot import prompt_vectors

    findings = prompts["finding"].to_list()
    polarity = prompts["polarity"].to_list()
    where = f" in version {version}" if version else ""
    if (finding, "positive") not in set(zip(findings, polarity)):
        known = sorted({f for f, p in zip(findings, polarity) if p == "positive"})
        raise InputError(
            f"finding {finding!r} has no positive prompt embeddings{where}; known: {', '.join(known) or 'none'}"
            " (add it to prompts.toml and re-run `embedstore encode`)"
        )
    if (finding, "negative") not in set(zip(findings, polarity)):
        raise InputError(f"finding {finding!r} has no negative prompt embeddings{where}; the zero-shot target is "
                         "the pos-neg logit: add a negative prompt to prompts.toml and re-run `embedstore encode`")
    vectors = prompt_vectors(prompts, np.asarray(matrix, dtype=np.float32), [finding], "ensemble")
    return ZeroShotTarget(finding, vectors.positive[0], vectors.negative[0], logit_scale)


def zeroshot_target_from_texts(loaded, finding: str, positive: list[str], negative: list[str] | None = None,
                               logit_scale: float = 1.0) -> ZeroShotTarget:
    """Encode the prompt texts with the loaded model (no store needed); templates are averaged by
    `prompt_vectors`, as for stored prompts. Without `negative`, the scaled positive cosine."""
    import polars as pl

    from embedstore.analyses.zeroshot import prompt_vectors

    if not positive:
        raise InputError(f"finding {finding!r}: no prompt texts given")
    texts = list(positive) + list(negative or [])
    table = pl.DataFrame({"finding": [finding] * len(texts),
                          "polarity": ["positive"] * len(positive) + ["negative"] * len(negative or [])})
    vectors = prompt_vectors(table, np.asarray(loaded.encode_texts(texts), dtype=np.float32), [finding], "ensemble")
    return ZeroShotTarget(finding, vectors.positive[0], vectors.negative[0] if negative else None, logit_scale)


def probe_target(finding: str, weights) -> ProbeTarget:
    """From a probe-weights table (polars; columns finding, coef (list of floats), intercept)."""
    rows = weights.filter(weights["finding"] == finding) if weights.height else weights
    if rows.height == 0:
        known = sorted(set(weights["finding"].to_list())) if weights.height else []
        raise InputError(f"no stored probe for finding {finding!r}; probes exist for: {', '.join(known) or 'none'}"
                         " (run `embedstore probe` first)")
    row = rows.row(rows.height - 1, named=True)  # the latest when several
    return ProbeTarget(finding, np.asarray(row["coef"], dtype=np.float32), float(row["intercept"]))
