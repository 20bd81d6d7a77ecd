"""Review fix: the probe's solver converges at CLIP's width (d = 512), where float32 L-BFGS used to
stop 1e-3 to 1e-2 away from scikit-learn's probabilities."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

import synthetic_vectors as synthetic
from embedstore.analyses import metrics as mt
from embedstore.analyses import probe as pb


@pytest.fixture(scope="module")
def wide():
    """2,000 images x 512 dims, standardised as the probe standardises them, 2 findings."""
    syn = synthetic.make(n=2000, n_findings=2, d=512, seed=4)
    Y01, known = mt.apply_policy(syn.Y)
    X = (syn.X - syn.X.mean(axis=0)) / syn.X.std(axis=0)
    return X, Y01, known


@pytest.mark.parametrize("C", [1.0, 100.0])
def test_fit_logreg_reaches_the_exact_optimum_at_d512(wide, C):
    """Reference: scikit-learn's newton-cholesky, which solves the same objective to its tol
    exactly (its lbfgs stops on the same relative-reduction rule and is itself ~1e-3 off here)."""
    X, Y01, known = wide
    theta = pb.fit_logreg(X, Y01, known, C)
    for j in range(Y01.shape[1]):
        m = known[:, j]
        with warnings.catch_warnings(), threadpool_limits(1):  # BLAS threads crawl on a shared machine
            warnings.simplefilter("ignore")  # newton-cholesky warns when it reaches tol=1e-12 in few steps
            ref = LogisticRegression(C=C, class_weight="balanced", solver="newton-cholesky", tol=1e-12,
                                     max_iter=1000).fit(X[m], Y01[m, j])
        mine = 1 / (1 + np.exp(-(X @ theta[j, :-1] + theta[j, -1])))
        assert np.abs(mine - ref.predict_proba(X)[:, 1]).max() < 1e-4
