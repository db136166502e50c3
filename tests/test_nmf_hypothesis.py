"""Property-based tests: on any small count matrix, tl.nmf either fits and writes non-negative,
finite factors of the documented shapes, or raises InputError and leaves the AnnData untouched."""
from __future__ import annotations

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

import scgen_ae as sa
from scgen_ae import _validate as v

from .conftest import Snapshot
from .test_hypothesis import SETTINGS, count_anndata


def _expected_error(adata, batch_key, k):
    """What the validators say about this input (None: it is valid)."""
    X = v.get_matrix(adata, None)
    for check in (lambda: v.check_not_empty(X, None), lambda: v.batch_codes(adata, batch_key)):
        try:
            check()
        except sa.InputError as err:
            return err
    return None if k <= min(X.shape) else f"n_components={k} > min{X.shape}"


def _fit_or_refuse(data, k, batch_size):
    adata, batch_key = data
    snap = Snapshot(adata)
    expected = _expected_error(adata, batch_key, k)
    try:
        model = sa.tl.nmf(adata, n_components=k, batch_key=batch_key, batch_size=batch_size, max_iter=15,
                          n_threads=1)
    except sa.InputError as err:
        event("refused")
        assert expected is not None, f"valid input refused: {err}"
        snap.assert_unchanged(adata)
        return
    event("fitted" + (" (iNMF)" if batch_key else ""))
    assert expected is None, f"invalid input accepted (validators say: {expected})"
    Z, L = adata.obsm["X_nmf"], adata.varm["nmf_loadings"]
    assert Z.shape == (adata.n_obs, k) and L.shape == (adata.n_vars, k)
    assert np.isfinite(Z).all() and np.isfinite(L).all() and (Z >= 0).all() and (L >= 0).all()
    norms = np.linalg.norm(L, axis=0)
    assert np.all((np.abs(norms - 1) < 1e-4) | (norms == 0))  # unit-norm factors (a dead one stays 0)
    assert np.isfinite(adata.uns["nmf"]["history"]["train_loss"]).all()
    W = model.transform(adata)
    assert W.shape == (adata.n_obs, k) and np.isfinite(W).all() and (W >= 0).all()


@SETTINGS
@given(data=count_anndata(), k=st.sampled_from([1, 3, 6]), batch_size=st.sampled_from([None, 7]))
def test_nmf_fits_or_refuses_cleanly(data, k, batch_size):
    _fit_or_refuse(data, k, batch_size)


@settings(SETTINGS, max_examples=10)
@given(data=count_anndata(batch_modes=("none", "single", "two"), empty=False), k=st.sampled_from([1, 4]))
def test_nmf_fits_valid_counts(data, k):
    """Without empty cells/genes (single batch and no batch included) nearly every draw fits."""
    _fit_or_refuse(data, k, None)
