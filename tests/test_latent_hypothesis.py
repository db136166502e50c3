"""Property-based tests of the latent-arithmetic fronts (issue 7) on small random count
matrices (shapes, sparsity, dtypes, all-zero cells, one or two batches): tl.predict,
tl.remove_batch and tl.transfer_labels either give finite results of the documented
shapes or raise InputError and leave the AnnData untouched."""
from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import Phase, event, given, settings
from hypothesis import strategies as st

import scgen_ae as sa

from .conftest import Snapshot
from .test_hypothesis import SETTINGS, count_anndata

LATENT = 3
# no explain phase: it re-runs every failing example hundreds of times (minutes of CPU)
PROPS = settings(SETTINGS, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])


def _model(adata, likelihood="nb"):
    """A tiny VAE without batch (scGen's setting), trained on the non-empty cells and genes."""
    return sa.tl.vae(sa.pp.drop_empty(adata, copy=True), batch_key=None, likelihood=likelihood, n_latent=LATENT, n_hidden=8,
                     max_epochs=1, n_threads=1, progress=False)


def _labels(draw, n, values, name):
    idx = draw.draw(st.lists(st.integers(0, len(values) - 1), min_size=n, max_size=n))
    return pd.Categorical(np.asarray(values)[idx], categories=values) if name else np.asarray(values)[idx]


def _valid(adata):
    """Data a tiny model can be trained on: some non-empty cells and genes."""
    X = adata.X
    return (np.asarray(X.sum(1)).ravel() > 0).sum() >= 4 and (np.asarray(X.sum(0)).ravel() > 0).any()


@settings(PROPS, max_examples=12)
@given(data=count_anndata(empty=True), labels=st.data(), likelihood=st.sampled_from(["nb", "zinb", "poisson"]),
       balance=st.booleans())
def test_predict_shapes_or_clean_refusal(data, labels, likelihood, balance):
    adata, _ = data
    if not _valid(adata):
        return
    n = adata.n_obs
    adata.obs["cond"] = _labels(labels, n, ["ctrl", "stim"], True)
    adata.obs["type"] = _labels(labels, n, ["t0", "t1", "t2"], True)
    model = _model(adata, likelihood)
    cond, types = adata.obs["cond"].astype(str).to_numpy(), adata.obs["type"].astype(str).to_numpy()
    is_ctrl, is_stim = cond == "ctrl", cond == "stim"
    others = set(types[is_ctrl]) & set(types[is_stim]) - {"t0"}
    # the oracle: what tl.predict must refuse, read from the definition of its inputs
    refuse = not is_ctrl.any() or not is_stim.any() or not (is_ctrl & (types == "t0")).any() or not others
    snap = Snapshot(adata)
    try:
        pred = sa.tl.predict(model, adata, condition_key="cond", ctrl="ctrl", stim="stim", cell_type_key="type",
                             predict="t0", balance=balance)
    except sa.InputError:
        event("refused")
        assert refuse
        snap.assert_unchanged(adata)
        return
    event("predicted")
    assert not refuse
    snap.assert_unchanged(adata)  # predict returns a new object and never writes into adata
    rows = is_ctrl & (types == "t0")
    assert pred.shape == (int(rows.sum()), len(model.var_names))
    X = np.asarray(pred.X)
    assert np.isfinite(X).all() and (X >= 0).all()
    assert pred.uns["predict"]["delta"].shape == (LATENT,) and np.isfinite(pred.uns["predict"]["delta"]).all()
    assert set(pred.uns["predict"]["cell_types_used"]) == others


@settings(PROPS, max_examples=12)
@given(data=count_anndata(batch_modes=("two", "single", "two-unbalanced"), empty=True), labels=st.data(),
       aware=st.booleans())
def test_remove_batch_shapes_and_anchor(data, labels, aware):
    adata, _ = data
    if not _valid(adata):
        return
    model = _model(adata)
    if aware:
        adata.obs["type"] = _labels(labels, adata.n_obs, ["t0", "t1"], True)
    z = model.get_latent(adata)
    out = sa.tl.remove_batch(model, adata, batch_key="batch", cell_type_key="type" if aware else None, copy=True)
    corrected = out.obsm["X_vae_corrected"]
    assert corrected.shape == (adata.n_obs, LATENT) and np.isfinite(corrected).all()
    batch = adata.obs["batch"].astype(str)
    anchor = (batch == batch.value_counts().index[0]).to_numpy()
    assert np.array_equal(corrected[anchor], z[anchor])  # the largest batch is the anchor and stays
    assert "X_vae_corrected" not in adata.obsm  # copy=True left the input alone
    if batch.nunique() == 1:
        assert np.array_equal(corrected, z)


@settings(PROPS, max_examples=15)
@given(data=count_anndata(empty=False), labels=st.data(), n_neighbors=st.integers(1, 50))
def test_transfer_labels_probabilities(data, labels, n_neighbors):
    adata, _ = data
    model = _model(adata)
    n = adata.n_obs
    half = n // 2
    ref, query = adata[:half].copy(), adata[half:].copy()
    ref.obs["label"] = _labels(labels, half, ["a", "b", "c"], True)
    ref.obsm["X_vae"], query.obsm["X_vae"] = model.get_latent(ref), model.get_latent(query)
    sa.tl.transfer_labels(query, reference=ref, label_key="label", n_neighbors=n_neighbors)
    names = list(query.uns["label_transferred"]["labels"])
    assert names == sorted(set(ref.obs["label"].astype(str)))
    proba = query.obsm["label_transferred_probabilities"]
    assert proba.shape == (query.n_obs, len(names))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    unc = query.obs["label_transferred_uncertainty"].to_numpy()
    assert ((unc >= 0) & (unc <= 1 - 1 / len(names) + 1e-6)).all()
    # the label is the most probable one
    assert (np.asarray(names)[proba.argmax(1)] == query.obs["label_transferred"].astype(str).to_numpy()).all()
    if len(names) == 1:
        assert np.allclose(unc, 0)
