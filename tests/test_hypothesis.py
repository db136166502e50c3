"""Property-based tests: on any small count matrix, tl.vae either trains and writes finite
latents of the right shape, or raises InputError and leaves the AnnData untouched."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import scgen_ae as sa
from scgen_ae import _validate as v

from .conftest import Snapshot

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@st.composite
def count_anndata(draw, batch_modes=("two", "none", "two", "single", "two", "two-unbalanced"), empty=True):
    """A small count matrix, valid unless the draw asks for a defect: all-zero cells or
    genes, a single batch, or a batch with fewer than 3 cells."""
    n = draw(st.integers(10, 40))
    g = draw(st.integers(5, 30))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.05, 0.2, 0.5, 1.0]))
    scale = draw(st.sampled_from([0.5, 3.0, 50.0]))
    n_zero_rows = draw(st.sampled_from([0, 0, 0, 1, 2])) if empty else 0
    n_zero_cols = draw(st.sampled_from([0, 0, 0, 0, 1])) if empty else 0
    batches = draw(st.sampled_from(batch_modes))
    sparse = draw(st.booleans())
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int64]))

    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.gamma(0.7, scale, (n, g))) * (rng.random((n, g)) < density)
    # sparse draws leave cells/genes empty by chance: give each one count, then break on purpose
    for i in np.flatnonzero(X.sum(1) == 0):
        X[i, rng.integers(g)] = 1
    for j in np.flatnonzero(X.sum(0) == 0):
        X[rng.integers(n), j] = 1
    X[rng.choice(n, n_zero_rows, replace=False)] = 0
    X[:, rng.choice(g, n_zero_cols, replace=False)] = 0
    X = X.astype(dtype)
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n)])
    if batches == "single":
        obs["batch"] = pd.Categorical(["a"] * n)
    elif batches == "two":
        col = np.where(np.arange(n) < n // 2, "a", "b")
        obs["batch"] = pd.Categorical(rng.permutation(col))
    elif batches == "two-unbalanced":  # a batch of 1-4 cells: too small below 3
        col = np.array(["a"] * n, dtype=object)
        col[rng.choice(n, draw(st.integers(1, 4)), replace=False)] = "b"
        obs["batch"] = pd.Categorical(col)
    adata = AnnData(sp.csr_matrix(X) if sparse else X, obs=obs,
                    var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    return adata, (None if batches == "none" else "batch")


def _expected_error(adata, batch_key):
    """What the validators say about this input (None: it is valid)."""
    X = v.get_matrix(adata, None)
    try:
        v.check_counts(X, None, "zinb")
        v.check_not_empty(X, None)
        v.batch_codes(adata, batch_key, allow_single=True)  # tl.vae trains a one-batch reference
    except sa.InputError as err:
        return err
    return None


def _train_or_refuse(data, batch_size, likelihood):
    adata, batch_key = data
    snap = Snapshot(adata)
    expected = _expected_error(adata, batch_key)
    try:
        model = sa.tl.vae(adata, batch_key=batch_key, likelihood=likelihood, n_latent=3, n_hidden=16,
                          max_epochs=2, batch_size=batch_size, n_threads=1, progress=False)
    except sa.InputError as err:
        event("refused: " + str(err).split(" has ")[-1][:25])
        assert expected is not None, f"valid input refused: {err}"
        snap.assert_unchanged(adata)
        return
    event("trained")
    assert expected is None, f"invalid input accepted (validators say: {expected})"
    z = adata.obsm["X_vae"]
    assert z.shape == (adata.n_obs, 3)
    assert np.isfinite(z).all()
    assert np.isfinite(adata.uns["vae"]["history"]["train_loss"]).all()
    # applying the model to its own data gives the stored latent
    np.testing.assert_allclose(model.get_latent(adata), z, rtol=1e-4, atol=1e-5)


@SETTINGS
@given(data=count_anndata(), batch_size=st.sampled_from([2, 5, 128]),
       likelihood=st.sampled_from(["zinb", "nb", "poisson"]))
def test_vae_trains_or_refuses_cleanly(data, batch_size, likelihood):
    _train_or_refuse(data, batch_size, likelihood)


@settings(SETTINGS, max_examples=10)
@given(data=count_anndata(batch_modes=("single", "two-unbalanced"), empty=False), likelihood=st.sampled_from(["zinb", "nb"]))
def test_vae_batch_defects_refused_cleanly(data, likelihood):
    _train_or_refuse(data, 128, likelihood)


@SETTINGS
@given(data=count_anndata())
def test_drop_empty_makes_valid_counts(data):
    adata, _ = data
    X = v.get_matrix(adata, None)
    if X.nnz == 0:
        return
    out = sa.pp.drop_empty(adata, copy=True)
    v.check_not_empty(v.get_matrix(out, None), None)  # does not raise
    assert out.n_obs == int((np.diff(X.indptr) > 0).sum())


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(values=st.lists(st.floats(0.0, 1e4, allow_nan=False, width=32), min_size=1, max_size=40),
       negate=st.booleans())
def test_check_counts_matches_definition(values, negate):
    """check_counts accepts exactly the non-negative (near-)integer matrices."""
    data = np.asarray(values, dtype=np.float32)
    if negate:
        data = -data
    X = sp.csr_matrix(data[None, :])
    ok = bool(np.all(X.data >= 0) and np.all(np.abs(X.data - np.round(X.data)) <= 1e-3))
    try:
        v.check_counts(X, None, "zinb")
    except sa.InputError:
        assert not ok
    else:
        assert ok


@pytest.mark.parametrize("n", [3, 4, 5])
def test_smallest_trainable_data(n):
    """Two batches of 3+ cells is the minimum; nothing crashes below the validation split."""
    rng = np.random.default_rng(n)
    X = rng.poisson(3.0, (2 * n, 6)).astype(np.float32) + 1
    adata = AnnData(sp.csr_matrix(X), obs=pd.DataFrame({"batch": pd.Categorical(["a"] * n + ["b"] * n)},
                                                       index=[f"c{i}" for i in range(2 * n)]))
    sa.tl.vae(adata, batch_key="batch", n_latent=2, n_hidden=8, max_epochs=2, n_threads=1, progress=False)
    assert np.isfinite(adata.obsm["X_vae"]).all()
