"""The scvi-tools bridge: ``tl.vae(backend="scvi-tools")`` (SCVI, LinearSCVI) writes the same keys
as the native model, and the AmortizedLDA adapter returns proportions, topic-gene matrix and history."""
from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

import scgen_ae as sa
from scgen_ae.bridge import scvi_tools as bridge

from .conftest import FAST, TRAINED_KW, fit_copy

pytest.importorskip("scvi")

BRIDGE_KW = dict(TRAINED_KW, max_epochs=3)


@pytest.fixture(scope="session")
def scvi_trained(cellbench_hvg):
    """(annotated copy of cellbench_hvg, scvi-tools SCVI) through tl.vae. Do not modify."""
    return fit_copy(sa.tl.vae, cellbench_hvg, backend="scvi-tools", **BRIDGE_KW)


def test_same_keys_as_native(trained, scvi_trained, cellbench_hvg):
    native, _ = trained
    adata, model = scvi_trained
    assert type(model).__name__ == "SCVI"
    assert adata.obsm["X_vae"].shape == native.obsm["X_vae"].shape == (cellbench_hvg.n_obs, 8)
    assert np.all(np.isfinite(adata.obsm["X_vae"]))
    assert set(adata.uns["vae"]) == set(native.uns["vae"])
    assert set(native.uns["vae"]["params"]) <= set(adata.uns["vae"]["params"])
    hist, native_hist = adata.uns["vae"]["history"], native.uns["vae"]["history"]
    # the same keys, less the terms of the alignment penalty scvi-tools does not run
    assert set(hist) == {k for k in native_hist if not k.endswith("_alignment")}
    assert {"train_reconstruction", "train_kl", "validation_reconstruction", "validation_kl"} <= set(hist)
    assert len(hist["train_loss"]) == len(hist["validation_loss"]) == len(hist["kl_weight"]) == 3
    assert np.all(np.isfinite(hist["train_loss"])) and hist["seconds"] > 0
    # arguments mapped with tl.vae's values, and what did not run is recorded as off
    params = adata.uns["vae"]["params"]
    assert params["backend"] == "scvi-tools" and params["scvi_model"] == "SCVI"
    assert params["batch_gene_offsets"] is False and params["mmd_weight"] == 0.0
    assert params["covariate_independence_weight"] == 0.0
    assert model.module.n_latent == 8 and model.module.encode_covariates is True
    assert "vae_loadings" not in adata.varm
    # the caller's object was only annotated, not given scvi-tools' setup fields
    assert "_scvi_uuid" not in cellbench_hvg.uns and "_scvi_batch" not in adata.obs


def test_bridge_latent_separates_cell_lines(scvi_trained):
    """Same science: cells of one cell line sit closer together than cells of different lines."""
    adata, _ = scvi_trained
    z = adata.obsm["X_vae"]
    labels = adata.obs["cell_type"].to_numpy()
    centroids = {c: z[labels == c].mean(0) for c in np.unique(labels)}
    own = np.mean([np.linalg.norm(z[i] - centroids[labels[i]]) for i in range(len(z))])
    other = np.mean([np.linalg.norm(a - b) for a in centroids.values() for b in centroids.values() if a is not b])
    assert own < other


def test_linear_scvi_loadings_in_varm(cellbench_hvg, snapshot):
    snap = snapshot(cellbench_hvg)
    adata, model = fit_copy(sa.tl.vae, cellbench_hvg, backend="scvi-tools", linear_decoder=True,
                            **dict(BRIDGE_KW, max_epochs=2))
    snap.assert_unchanged(cellbench_hvg)  # copy=True
    assert type(model).__name__ == "LinearSCVI"
    loadings = adata.varm["vae_loadings"]
    assert loadings.shape == (cellbench_hvg.n_vars, 8) and np.all(np.isfinite(loadings))
    assert adata.uns["vae"]["params"]["encode_batch"] is False  # LinearSCVI's encoder takes no covariates
    assert adata.obsm["X_vae"].shape == (cellbench_hvg.n_obs, 8)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(likelihood="gaussian"), sa.InputError, "likelihood='gaussian' has no counterpart in scvi-tools"),
    (dict(mmd_weight=0.5), sa.InputError, "mmd_weight=0.5 has no counterpart"),
    (dict(covariate_independence_weight=3.0), sa.InputError, "covariate_independence_weight=3.0 has no counterpart"),
    (dict(backend="native", linear_decoder=True), ValueError, "linear_decoder=True needs backend='scvi-tools'"),
    (dict(backend="scvitools"), ValueError, "backend='scvitools'; choose 'native' or 'scvi-tools'"),
    (dict(batch_key="batch_typo"), sa.InputError, "batch_key=.batch_typo. is not a column"),
])
def test_refused_arguments_leave_adata_unchanged(cellbench_hvg, snapshot, kwargs, error, message):
    adata = cellbench_hvg.copy()
    snap = snapshot(adata)
    with pytest.raises(error, match=message):
        sa.tl.vae(adata, **{**BRIDGE_KW, "backend": "scvi-tools", **kwargs})
    snap.assert_unchanged(adata)


def test_missing_scvi_tools_says_how_to_install(cellbench_hvg, snapshot, monkeypatch):
    adata = cellbench_hvg.copy()
    snap = snapshot(adata)
    monkeypatch.setitem(sys.modules, "scvi", None)  # import scvi now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "scgen-ae\[scvi\]"'):
        sa.tl.vae(adata, backend="scvi-tools", **BRIDGE_KW)
    with pytest.raises(ImportError, match=r"scgen-ae\[scvi\]"):
        bridge.fit_amortized_lda(adata, n_topics=3, max_epochs=1)
    snap.assert_unchanged(adata)


def test_amortized_lda_adapter(cellbench_hvg, snapshot):
    snap = snapshot(cellbench_hvg)
    fit = bridge.fit_amortized_lda(cellbench_hvg, n_topics=4, max_epochs=3, n_samples=200, **FAST)
    snap.assert_unchanged(cellbench_hvg)
    assert fit.latent.shape == (cellbench_hvg.n_obs, 4)
    np.testing.assert_allclose(fit.latent.sum(1), 1.0, atol=1e-4)
    assert fit.loadings.shape == (4, cellbench_hvg.n_vars) and np.all(fit.loadings >= 0)
    np.testing.assert_allclose(fit.loadings.sum(1), 1.0, atol=1e-3)
    assert len(fit.history["train_loss"]) == 3 and np.all(np.isfinite(fit.history["train_loss"]))
    assert len(fit.history["validation_loss"]) == 0 and fit.history["seconds"] > 0


def test_amortized_lda_refuses_non_counts(cellbench_hvg, snapshot):
    adata = cellbench_hvg.copy()
    adata.X = adata.X * 0.5
    snap = snapshot(adata)
    with pytest.raises(sa.InputError, match="non-integer"):
        bridge.fit_amortized_lda(adata, n_topics=3, max_epochs=1)
    snap.assert_unchanged(adata)


@pytest.mark.parametrize("kwargs, match", [(dict(n_topics=1), r"n_topics=1 .* an integer >= 2"),
                                           (dict(n_topics=2.5), r"n_topics=2.5 .* an integer >= 2"),
                                           (dict(n_hidden=0), r"n_hidden=0 .* an integer >= 1")])
def test_lda_backend_refuses_the_model_options_before_any_read(cellbench_hvg, monkeypatch, kwargs, match):
    """The native model's rules, before the cells are read and before scvi-tools sees them."""
    from scgen_ae.spec import DataSpec

    monkeypatch.setattr(DataSpec, "learn", lambda *a, **k: pytest.fail("read the cells before checking"))
    adata = cellbench_hvg[:50].copy()
    with pytest.raises(sa.InputError, match=match) as info:
        sa.tl.lda(adata, backend="scvi-tools", **{"n_topics": 3, **FAST, **kwargs})
    assert "(a keyword of sa.tl.lda(backend='scvi-tools')) is invalid" in str(info.value)
    assert not adata.obsm and "lda" not in adata.uns


def test_lda_backend_writes_the_native_keys(cellbench_hvg):
    adata, model = fit_copy(sa.tl.lda, cellbench_hvg, n_topics=4, backend="scvi-tools", max_epochs=3, **FAST)
    native, _ = fit_copy(sa.tl.lda, cellbench_hvg, n_topics=4, max_epochs=2, **FAST)
    assert type(model).__name__ == "AmortizedLDA"
    assert adata.obsm["X_lda"].shape == native.obsm["X_lda"].shape
    assert adata.varm["lda_topics"].shape == native.varm["lda_topics"].shape
    np.testing.assert_allclose(adata.varm["lda_topics"].sum(0), 1.0, atol=1e-3)
    assert set(native.uns["lda"]) == set(adata.uns["lda"])
    assert adata.uns["lda"]["params"]["scvi_model"] == "AmortizedLDA"
    assert 1.0 < adata.uns["lda"]["train_perplexity"] < cellbench_hvg.n_vars  # better than uniform over genes


@pytest.mark.parametrize("front", [sa.tl.vae, sa.tl.lda])
def test_backend_warnings_point_at_the_callers_line(sim, front):
    """The backends run inside tl.vae / tl.lda: their warnings still name the caller's line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        front(sim, backend="scvi-tools", max_epochs=1, **FAST)
    with pytest.warns(UserWarning) as record:
        front(sim, backend="scvi-tools", max_epochs=1, **FAST)
    ours = [w for w in record if "Replacing" in str(w.message) or isinstance(w.message, sa.tl.CompositionWarning)]
    assert ours and {w.filename for w in ours} == {__file__}


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(batch_key="batch"), sa.InputError, "no batch covariate"),
    (dict(method="classic"), ValueError, "native only"),
    (dict(patience=3), TypeError, "does not map"),
])
def test_lda_backend_refusals_leave_adata_unchanged(cellbench_hvg, snapshot, kwargs, error, message):
    snap = snapshot(cellbench_hvg)
    with pytest.raises(error, match=message):
        sa.tl.lda(cellbench_hvg, n_topics=3, backend="scvi-tools", **kwargs)
    snap.assert_unchanged(cellbench_hvg)
