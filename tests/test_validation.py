"""Every documented input error: the message says what is wrong, and the AnnData is left
exactly as it was. Also the inputs that must be accepted (dtypes, backed mode)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

import scgen_ae as sa

from .conftest import FAST

TINY = dict(batch_key="batch", n_latent=4, n_hidden=32, max_epochs=2, **FAST)


def _fails(adata, snapshot, match, fn=sa.tl.vae, exc=sa.InputError, **kwargs):
    """Call ``fn(adata, **kwargs)``; assert it raises ``exc`` matching ``match`` and changes nothing."""
    snap = snapshot(adata)
    with pytest.raises(exc, match=match) as info:
        fn(adata, **{**TINY, **kwargs}) if fn is sa.tl.vae else fn(adata, **kwargs)
    snap.assert_unchanged(adata)
    return info.value


def _set_X(adata, X):
    adata.X = X
    return adata


# ---------------------------------------------------------------- counts

def test_log_normalised_input_to_count_likelihood(sim, snapshot):
    sc.pp.normalize_total(sim, target_sum=1e4)
    sc.pp.log1p(sim)
    err = _fails(sim, snapshot, r"log-normalised")
    msg = str(err)
    assert "non-integer" in msg and "adata.X" in msg
    assert "layer=" in msg and "gaussian" in msg  # says how to fix it
    assert isinstance(err, ValueError)


@pytest.mark.parametrize("likelihood", ["zinb", "nb", "poisson"])
def test_non_integer_counts_each_count_likelihood(sim, snapshot, likelihood):
    sim.X = sim.X * 1.5  # non-integers above 30: not called log-normalised
    err = _fails(sim, snapshot, r"non-integer values", likelihood=likelihood)
    assert f"likelihood={likelihood!r}" in str(err)
    assert "log-normalised (all below 30)" not in str(err)


def test_negative_values(sim, snapshot):
    X = sim.X.toarray()
    X[0, :3] = -1.0
    sim.X = sp.csr_matrix(X)
    err = _fails(sim, snapshot, r"3 negative values")
    assert "sc.pp.scale" in str(err)


def test_negative_values_in_layer(sim, snapshot):
    sim.layers["counts"] = sim.X.copy()
    sim.layers["counts"][1, 1] = -2.0
    err = _fails(sim, snapshot, r"negative values", layer="counts")
    assert "adata.layers['counts']" in str(err)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_nan_inf(sim, snapshot, bad, sparse):
    X = sim.X.toarray()
    X[2, 3] = bad
    X[5, 0] = bad
    sim.X = sp.csr_matrix(X) if sparse else X
    err = _fails(sim, snapshot, r"2 NaN/Inf values")
    assert "adata.X" in str(err)


@pytest.mark.parametrize("likelihood", ["zinb", "gaussian"])
def test_nan_refused_for_gaussian_too(sim, snapshot, likelihood):
    sc.pp.normalize_total(sim)
    sc.pp.log1p(sim)
    sim.X[0, 0] = np.nan
    if likelihood == "zinb":
        sim.layers["counts"] = sim.X.copy()
    _fails(sim, snapshot, r"NaN/Inf", likelihood=likelihood)


def test_empty_cells(sim, snapshot):
    X = sim.X.tolil()
    X[[4, 9], :] = 0
    sim.X = X.tocsr()
    sim.X.eliminate_zeros()
    err = _fails(sim, snapshot, r"has 2 cells and 0 genes with no counts")
    assert "sa.pp.drop_empty" in str(err)


def test_empty_genes(sim, snapshot):
    X = sim.X.tolil()
    X[:, [0, 1, 2]] = 0
    sim.X = X.tocsr()
    sim.X.eliminate_zeros()
    _fails(sim, snapshot, r"has 0 cells and 3 genes with no counts")


def test_explicit_zeros_count_as_empty(sim, snapshot):
    """A gene whose only stored entries are explicit zeros has no counts either."""
    X = sim.X.tolil()
    X[:, 0] = 0
    coo = X.tocsr().tocoo()
    coo.eliminate_zeros()
    X = sp.csr_matrix((np.append(coo.data, 0.0), (np.append(coo.row, 0), np.append(coo.col, 0))), shape=X.shape)
    assert X.nnz == coo.nnz + 1 and X[:, 0].sum() == 0  # one explicit zero stored in gene 0
    sim.X = X
    _fails(sim, snapshot, r"has 0 cells and 1 genes with no counts")


def test_drop_empty_fixes_it(sim):
    X = sim.X.tolil()
    X[3, :] = 0
    X[:, 7] = 0
    sim.X = X.tocsr()
    sim.X.eliminate_zeros()
    n, g = sim.shape
    sa.pp.drop_empty(sim)
    assert sim.shape == (n - 1, g - 1)
    assert sim.uns["drop_empty"] == {"cells_dropped": 1, "genes_dropped": 1}
    sa.tl.vae(sim, **TINY)


def test_empty_anndata(snapshot):
    adata = AnnData(np.zeros((0, 5), dtype=np.float32))
    _fails(adata, snapshot, r"The AnnData is empty \(0 cells x 5 genes\)", batch_key=None)


def test_not_an_anndata():
    with pytest.raises(sa.InputError, match="Expected an AnnData object, got ndarray"):
        sa.tl.vae(np.ones((10, 5)), **FAST)


def test_non_numeric_matrix(snapshot):
    adata = AnnData(np.array([["a", "b"], ["c", "d"], ["e", "f"]], dtype=object))
    _fails(adata, snapshot, r"numeric matrix", batch_key=None)


# ---------------------------------------------------------------- layers and obs columns

def test_missing_layer(sim, snapshot):
    sim.layers["raw"] = sim.X.copy()
    err = _fails(sim, snapshot, r"layer='counts' is not in adata.layers", layer="counts")
    assert "'raw'" in str(err)


def test_missing_layer_none_available(sim, snapshot):
    err = _fails(sim, snapshot, r"layer='counts' is not in adata.layers", layer="counts")
    assert "none" in str(err)


def test_missing_batch_key(sim, snapshot):
    err = _fails(sim, snapshot, r"batch_key='sample' is not a column of adata.obs", batch_key="sample")
    assert "'batch'" in str(err) and "'cell_type'" in str(err)  # lists the columns


def test_single_category_batch(sim, snapshot):
    """Fronts without query mapping refuse one batch (tl.vae accepts it: tests/test_labels.py)."""
    sim.obs["one"] = pd.Categorical(["only"] * sim.n_obs)
    _fails(sim, snapshot, r"single category \('only'\).*batch_key=None", fn=sa.tl.denoise, batch_key="one")


def test_single_used_category_of_a_categorical(sim, snapshot):
    """A categorical with several categories but only one in use is still a single batch."""
    sim.obs["one"] = pd.Categorical(["x"] * sim.n_obs, categories=["x", "y", "z"])
    _fails(sim, snapshot, r"single category", fn=sa.tl.denoise, batch_key="one")


def test_category_with_too_few_cells(sim, snapshot):
    col = np.array(["big"] * sim.n_obs, dtype=object)
    col[:2] = "tiny"
    sim.obs["b2"] = pd.Categorical(col)
    err = _fails(sim, snapshot, r"fewer than 3 cells", batch_key="b2")
    assert "tiny" in str(err)


def test_nan_in_batch_column(sim, snapshot):
    col = sim.obs["batch"].astype(object).copy()
    col.iloc[[0, 10, 20]] = np.nan
    sim.obs["batch"] = pd.Categorical(col)
    _fails(sim, snapshot, r"adata.obs\['batch'\] has 3 missing values")


def test_numeric_batch_column_accepted(sim):
    sim.obs["plate"] = (np.arange(sim.n_obs) % 2).astype(int)
    model = sa.tl.vae(sim, **{**TINY, "batch_key": "plate"})
    assert model.batch_categories == ["0", "1"]


# ---------------------------------------------------------------- options

def test_unknown_likelihood(sim, snapshot):
    _fails(sim, snapshot, r"likelihood='zip'", exc=ValueError, likelihood="zip")


def test_unknown_dispersion(sim, snapshot):
    _fails(sim, snapshot, r"dispersion='cell'", exc=ValueError, dispersion="cell")


@pytest.mark.parametrize("opt", [dict(n_latent=0), dict(n_hidden=0), dict(dropout_rate=1.0)], ids=str)
def test_bad_architecture(sim, snapshot, opt):
    _fails(sim, snapshot, next(iter(opt)), exc=ValueError, **opt)


# ---------------------------------------------------------------- applying a trained model

def test_unseen_batch_at_get_latent(trained_sim, snapshot):
    adata, model = trained_sim
    new = adata[:30].copy()
    new.obs["batch"] = pd.Categorical(["batch0"] * 15 + ["batchX"] * 15)
    err = _fails(new, snapshot, r"categories the model was not trained on: \['batchX'\]", fn=model.get_latent)
    assert "batch0" in str(err)  # lists the known ones


def test_missing_batch_column_at_get_latent(trained_sim, snapshot):
    adata, model = trained_sim
    new = adata[:30].copy()
    del new.obs["batch"]
    _fails(new, snapshot, r"batch_key='batch' is not a column", fn=model.get_latent)


def test_batch_key_none_for_batched_model(trained_sim, snapshot):
    adata, model = trained_sim
    new = adata[:30].copy()
    _fails(new, snapshot, r"trained with 2 batches; pass batch_key=", fn=model.get_latent, batch_key=None)


def test_batch_key_can_be_renamed_at_get_latent(trained_sim):
    adata, model = trained_sim
    new = adata[:30].copy()
    new.obs["sample"] = new.obs["batch"]
    del new.obs["batch"]
    np.testing.assert_allclose(model.get_latent(new, batch_key="sample"), adata.obsm["X_vae"][:30],
                               rtol=1e-5, atol=1e-6)


def test_single_batch_of_known_categories_at_get_latent(trained_sim):
    """New data from one known batch is fine (the >=2 batches rule is for training only)."""
    adata, model = trained_sim
    mask = (adata.obs["batch"] == "batch1").to_numpy()
    new = adata[mask].copy()
    np.testing.assert_allclose(model.get_latent(new), adata.obsm["X_vae"][mask], rtol=1e-5, atol=1e-6)


def test_missing_genes_at_get_latent(trained_sim, snapshot):
    adata, model = trained_sim
    new = adata[:30, 5:].copy()
    err = _fails(new, snapshot, r"5 of the model's \d+ genes are not in adata.var_names", fn=model.get_latent)
    assert "pad_missing=True" in str(err)
    assert "gene0" in str(err)  # names some of them


def test_missing_genes_pad_missing(trained_sim, snapshot):
    adata, model = trained_sim
    new = adata[:30, 5:].copy()
    snap = snapshot(new)
    with pytest.warns(UserWarning, match=r"5 of the model's \d+ genes"):
        z = model.get_latent(new, pad_missing=True)
    snap.assert_unchanged(new)
    assert z.shape == (30, model.config.n_latent) and np.isfinite(z).all()
    # padding with zeros is the same as giving those genes zero counts
    zeroed = adata[:30].copy()
    X = zeroed.X.tolil()
    X[:, :5] = 0
    zeroed.X = X.tocsr()
    np.testing.assert_allclose(z, model.get_latent(zeroed), rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match="pad_missing=True fills them with zero counts"):
        expr = model.get_normalized_expression(new, pad_missing=True)
    assert expr.shape == (30, len(model.var_names))


def test_missing_genes_at_normalized_expression(trained_sim, snapshot):
    adata, model = trained_sim
    _fails(adata[:30, 5:].copy(), snapshot, r"genes are not in adata.var_names", fn=model.get_normalized_expression)


def test_transform_batch_unknown(trained_sim, snapshot):
    adata, model = trained_sim
    new = adata[:30].copy()
    err = _fails(new, snapshot, r"transform_batch='batch7' is not one of the model's batches",
                 fn=model.get_normalized_expression, transform_batch="batch7")
    assert "batch0" in str(err)


def test_log_normalised_at_get_latent(trained_sim, snapshot):
    adata, model = trained_sim
    new = adata[:30].copy()
    sc.pp.normalize_total(new)
    sc.pp.log1p(new)
    _fails(new, snapshot, r"log-normalised", fn=model.get_latent)


def test_missing_layer_at_get_latent(trained_sim, snapshot):
    adata, model = trained_sim
    _fails(adata[:30].copy(), snapshot, r"layer='counts' is not in adata.layers", fn=model.get_latent,
           layer="counts")


# ---------------------------------------------------------------- accepted inputs

@pytest.mark.parametrize("dtype,sparse", [(np.int64, True), (np.int32, True), (np.float64, True),
                                          (np.int64, False), (np.int32, False), (np.float64, False),
                                          (np.float16, False)],  # scipy.sparse has no float16
                         ids=lambda v: v.__name__ if isinstance(v, type) else ("sparse" if v else "dense"))
def test_dtypes_accepted(sim_session, dtype, sparse):
    adata = sim_session.copy()
    X = adata.X.toarray().astype(dtype)
    adata.X = sp.csr_matrix(X) if sparse else X
    ref = sa.tl.vae(sim_session, copy=True, **TINY).obsm["X_vae"]
    sa.tl.vae(adata, **TINY)
    assert adata.X.dtype == dtype  # not converted in place
    if dtype is not np.float16:  # float16 cannot hold every count exactly
        assert np.array_equal(adata.obsm["X_vae"], ref)
    assert np.isfinite(adata.obsm["X_vae"]).all()


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_backed_mode_accepted(sim_session, tmp_path, sparse):
    adata = sim_session.copy()
    if not sparse:
        adata.X = adata.X.toarray()
    path = tmp_path / "sim.h5ad"
    adata.write_h5ad(path)
    backed = sc.read_h5ad(path, backed="r")
    assert backed.isbacked
    model = sa.tl.vae(backed, **TINY)
    ref = sa.tl.vae(sim_session, copy=True, **TINY).obsm["X_vae"]
    assert np.array_equal(backed.obsm["X_vae"], ref)
    np.testing.assert_allclose(model.get_latent(backed), ref, rtol=1e-5, atol=1e-6)
    backed.file.close()


# ---------------------------------------------------------------- training that diverges

def test_diverging_loss_raises_and_leaves_adata_unchanged(sim, snapshot):
    snap = snapshot(sim)
    with pytest.raises(sa.TrainingDivergedError, match=r"NaN/Inf.*lr=1e\+06") as info:
        sa.tl.vae(sim, lr=1e6, **{**TINY, "max_epochs": 20})
    assert "last weights with a finite loss" in str(info.value)
    assert isinstance(info.value, RuntimeError)
    snap.assert_unchanged(sim)


def test_diverging_loss_from_huge_counts(sim, snapshot):
    """Absurd counts (1e30) overflow the likelihood: a clear error, not NaN latents."""
    X = sim.X.toarray()
    X[0, 0] = 1e30
    sim.X = sp.csr_matrix(X)
    snap = snapshot(sim)
    try:
        sa.tl.vae(sim, **TINY)
    except (sa.TrainingDivergedError, sa.InputError):
        snap.assert_unchanged(sim)
    else:
        assert np.isfinite(sim.obsm["X_vae"]).all()


def test_diverged_fit_restores_finite_weights(sim_session):
    """After divergence the module holds the last finite weights."""
    import torch

    from scgen_ae.models.vae import VAEConfig, VAEModule
    from scgen_ae.tl._common import training_data
    from scgen_ae.train import TrainConfig, fit

    data, cats = training_data(sim_session, None, "batch", "zinb")
    module = VAEModule(VAEConfig(n_genes=sim_session.n_vars, n_batches=len(cats), n_hidden=32, n_latent=4))
    with pytest.raises(sa.TrainingDivergedError):
        fit(module, data, TrainConfig(max_epochs=20, lr=1e6, progress=False, n_threads=1), "zinb")
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_dense_matrix_too_large_for_memory(sim, snapshot, monkeypatch):
    from scgen_ae import _validate

    sim.X = sim.X.toarray()
    snap = snapshot(sim)
    monkeypatch.setattr(_validate, "_available_bytes", lambda: 1000)
    with pytest.raises(sa.InputError, match=r"dense .* matrix.*GiB.*scipy.sparse"):
        sa.tl.vae(sim, batch_key="batch", max_epochs=1, **FAST)
    snap.assert_unchanged(sim)


def test_unknown_keyword_argument(sim, snapshot):
    snap = snapshot(sim)
    with pytest.raises(TypeError, match="max_epoch"):
        sa.tl.vae(sim, batch_key="batch", max_epoch=3, **FAST)
    snap.assert_unchanged(sim)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(sim, snapshot):
    snap = snapshot(sim)
    with pytest.raises(ValueError, match="cuda"):
        sa.tl.vae(sim, batch_key="batch", max_epochs=1, device="cuda", **FAST)
    snap.assert_unchanged(sim)
