"""Property-based tests for tl.lda: on any small count matrix (shapes, sparsity, all-zero
cells or genes, one or two batches), both methods either write normalised topic
proportions and topic-gene distributions, or raise InputError and leave the AnnData untouched."""
from __future__ import annotations

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

import scgen_ae as sa

from scgen_ae.data import train_validation_split

from .conftest import Snapshot
from .test_hypothesis import SETTINGS, _expected_error, count_anndata

K = 3


def _held_out(n: int) -> np.ndarray:
    """The cells tl.lda holds out for seed=0 (validation_fraction 0.1)."""
    return train_validation_split(n, 0.1, np.random.default_rng(0))[1]


def _fit_or_refuse(data, method: str) -> None:
    adata, batch_key = data
    if method == "classic":  # the textbook model has no batch covariate (refusal tested in test_lda.py)
        batch_key = None
    snap = Snapshot(adata)
    expected = _expected_error(adata, batch_key)
    kwargs = dict(n_hidden=8, max_epochs=2, batch_size=16) if method == "prodlda" else dict(max_iter=2)
    try:
        model = sa.tl.lda(adata, n_topics=K, method=method, batch_key=batch_key, seed=0, n_threads=1,
                          progress=False, **kwargs)
    except sa.InputError as err:
        event(f"{method} refused")
        assert expected is not None, f"valid input refused: {err}"
        snap.assert_unchanged(adata)
        return
    event(f"{method} fitted")
    assert expected is None, f"invalid input accepted (validators say: {expected})"
    theta = adata.obsm["X_lda"]
    assert theta.shape == (adata.n_obs, K)
    assert np.isfinite(theta).all() and (theta >= 0).all()
    np.testing.assert_allclose(theta.sum(1), 1.0, atol=1e-4)
    topics = adata.varm["lda_topics"]
    assert topics.shape == (adata.n_vars, K)
    assert (topics >= 0).all()
    np.testing.assert_allclose(topics.sum(0), 1.0, atol=1e-4)
    uns = adata.uns["lda"]
    assert np.isfinite(uns["history"]["train_loss"]).all()
    assert uns["train_perplexity"] >= 1.0  # a per-count perplexity is never below 1
    # the model applied to its own data gives the stored proportions. Classic: only the
    # held-out cells come from the same cold E-step (the training cells' are continued
    # from the fit, and a cell's variational problem can have several fixed points)
    cells = np.arange(adata.n_obs) if method == "prodlda" else _held_out(adata.n_obs)
    np.testing.assert_allclose(model.transform(adata[cells]), theta[cells], atol=1e-4)


@settings(SETTINGS, max_examples=10)
@given(data=count_anndata(), method=st.sampled_from(["prodlda", "classic"]))
def test_lda_fits_or_refuses_cleanly(data, method):
    _fit_or_refuse(data, method)
