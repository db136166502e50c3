"""tl.vae and the VAE object: outputs, reproducibility, every likelihood, layers, files,
new cells, normalised expression, early stopping, KL warm-up; and integration quality
on real data."""
from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import scgen_ae as sa

from .conftest import FAST, assert_same_latent, fit_copy

# a tiny, quick architecture for behavioural tests on the simulated data
TINY = dict(batch_key="batch", n_latent=4, n_hidden=32, max_epochs=3, **FAST)


def _lognorm(adata):
    out = adata.copy()
    sc.pp.normalize_total(out, target_sum=1e4)
    sc.pp.log1p(out)
    return out


# ---------------------------------------------------------------- outputs

def test_vae_writes_obsm_and_uns(trained, cellbench_hvg):
    adata, model = trained
    assert isinstance(model, sa.VAE)
    assert adata.obsm["X_vae"].shape == (adata.n_obs, 8)
    assert np.isfinite(adata.obsm["X_vae"]).all()
    uns = adata.uns["vae"]
    assert {"params", "history"} <= set(uns)
    params = uns["params"]
    assert params["batch_key"] == "batch"
    assert params["n_latent"] == 8
    assert params["likelihood"] == "zinb"
    assert params["max_epochs"] == 15
    hist = uns["history"]
    for key in ("train_loss", "validation_loss", "kl_weight", "best_epoch", "seconds"):
        assert key in hist
    assert len(hist["train_loss"]) == len(hist["kl_weight"]) <= 15
    assert len(hist["validation_loss"]) == len(hist["train_loss"])  # validation_fraction 0.1 by default
    assert np.isfinite(hist["train_loss"]).all() and np.isfinite(hist["validation_loss"]).all()
    assert 0 <= hist["best_epoch"] < len(hist["train_loss"])
    assert hist["seconds"] > 0
    # training lowers the loss (the validation loss: the training loss also holds the alignment
    # penalty, which grows with the KL warm-up while the batches are pulled together)
    assert hist["validation_loss"][-1] < hist["validation_loss"][0]
    # the model knows what it was trained on
    assert model.var_names == list(adata.var_names)
    assert model.batch_key == "batch"
    assert model.batch_categories == list(adata.obs["batch"].cat.categories)
    # the fixture trained with copy=True: the input was left alone
    assert "X_vae" not in cellbench_hvg.obsm and "vae" not in cellbench_hvg.uns


def test_key_added_and_uns_key(sim):
    model = sa.tl.vae(sim, key_added="X_mine", uns_key="mine", **TINY)
    assert sim.obsm["X_mine"].shape == (sim.n_obs, 4)
    assert "mine" in sim.uns and "vae" not in sim.uns and "X_vae" not in sim.obsm
    np.testing.assert_allclose(model.get_latent(sim), sim.obsm["X_mine"], rtol=1e-5, atol=1e-6)


def test_copy_true_leaves_original_untouched(sim, snapshot):
    snap = snapshot(sim)
    out = sa.tl.vae(sim, copy=True, **TINY)
    assert isinstance(out, type(sim))  # the annotated copy, as scanpy returns it
    model = sa.tl.get_model(out)
    assert isinstance(model, sa.VAE)
    assert out is not sim
    assert "X_vae" in out.obsm and "vae" in out.uns
    snap.assert_unchanged(sim)


def test_copy_false_returns_model_and_writes_in_place(sim):
    model = sa.tl.vae(sim, **TINY)
    assert isinstance(model, sa.VAE)
    assert "X_vae" in sim.obsm


def test_unknown_keyword_is_refused(sim, snapshot):
    snap = snapshot(sim)
    with pytest.raises(TypeError, match="max_epoch"):
        sa.tl.vae(sim, batch_key="batch", max_epoch=3, **FAST)
    snap.assert_unchanged(sim)


# ---------------------------------------------------------------- reproducibility

def test_same_seed_same_latent_different_seed_different(sim_session):
    a = sa.tl.vae(sim_session, copy=True, seed=7, **TINY).obsm["X_vae"]
    b = sa.tl.vae(sim_session, copy=True, seed=7, **TINY).obsm["X_vae"]
    c = sa.tl.vae(sim_session, copy=True, seed=8, **TINY).obsm["X_vae"]
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_training_does_not_disturb_global_rng(sim_session):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit_copy(sa.tl.vae, sim_session, **TINY)
    assert torch.equal(torch.rand(3), expected)


def test_sparse_and_dense_give_same_latent(sim_session):
    dense = sim_session.copy()
    dense.X = dense.X.toarray()
    csc = sim_session.copy()
    csc.X = sp.csc_matrix(csc.X)
    a = sa.tl.vae(sim_session, copy=True, **TINY).obsm["X_vae"]
    b = sa.tl.vae(dense, copy=True, **TINY).obsm["X_vae"]
    c = sa.tl.vae(csc, copy=True, **TINY).obsm["X_vae"]
    assert np.array_equal(a, b)
    assert np.array_equal(a, c)


def test_layer_gives_same_latent_as_counts_in_X(sim_session, snapshot):
    adata = _lognorm(sim_session)
    adata.layers["counts"] = sim_session.X.copy()
    snap_X = adata.X.copy()
    out, model = fit_copy(sa.tl.vae, adata, layer="counts", **TINY)
    ref = sa.tl.vae(sim_session, copy=True, **TINY).obsm["X_vae"]
    assert np.array_equal(out.obsm["X_vae"], ref)
    assert model.layer == "counts"
    assert out.uns["vae"]["params"]["layer"] == "counts"
    # X (log-normalised) was not touched, and get_latent defaults to the trained layer
    assert (out.X != snap_X).nnz == 0
    np.testing.assert_allclose(model.get_latent(out), ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- likelihoods and options

@pytest.mark.parametrize("likelihood", ["zinb", "nb", "poisson", "gaussian"])
def test_each_likelihood_trains(sim_session, likelihood):
    adata = _lognorm(sim_session) if likelihood == "gaussian" else sim_session.copy()
    model = sa.tl.vae(adata, likelihood=likelihood, **{**TINY, "max_epochs": 4})
    hist = adata.uns["vae"]["history"]
    assert len(hist["train_loss"]) == 4
    assert np.isfinite(hist["train_loss"]).all() and np.isfinite(hist["validation_loss"]).all()
    assert np.isfinite(adata.obsm["X_vae"]).all()
    assert model.config.likelihood == likelihood
    expr = model.get_normalized_expression(adata).to_numpy()
    assert expr.shape == adata.shape and np.isfinite(expr).all()


def test_gaussian_accepts_scaled_data(sim_session):
    """Gaussian models log-normalised (even scaled, negative) values: no count checks."""
    adata = _lognorm(sim_session)
    adata.X = adata.X.toarray()
    sc.pp.scale(adata)
    assert (adata.X < 0).any()
    sa.tl.vae(adata, likelihood="gaussian", **TINY)
    assert np.isfinite(adata.obsm["X_vae"]).all()


@pytest.mark.parametrize("likelihood", ["zinb", "nb"])
def test_gene_batch_dispersion_trains(sim_session, likelihood):
    adata, model = fit_copy(sa.tl.vae, sim_session, likelihood=likelihood, dispersion="gene-batch", **TINY)
    assert model.config.dispersion == "gene-batch"
    assert np.isfinite(adata.obsm["X_vae"]).all()
    assert np.isfinite(adata.uns["vae"]["history"]["train_loss"]).all()


def test_no_batch_key_trains_unconditional(sim_session):
    adata, model = fit_copy(sa.tl.vae, sim_session, **{**TINY, "batch_key": None})
    assert model.batch_key is None
    assert adata.obsm["X_vae"].shape == (sim_session.n_obs, 4)
    # an unconditional model applies to cells without any batch column
    bare = sim_session.copy()
    del bare.obs["batch"]
    np.testing.assert_allclose(model.get_latent(bare), adata.obsm["X_vae"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opts", [dict(encode_batch=False), dict(batch_gene_offsets=False), dict(n_layers=2),
                                  dict(dropout_rate=0.0), dict(beta=0.5)], ids=str)
def test_architecture_options_train(sim_session, opts):
    adata, model = fit_copy(sa.tl.vae, sim_session, **TINY, **opts)
    for k, v in opts.items():
        assert getattr(model.config, k) == v
    assert np.isfinite(adata.obsm["X_vae"]).all()


def test_three_batches(kang_hvg):
    """Real PBMC data (Kang), with three string batches assigned round-robin."""
    adata = kang_hvg[:400].copy()
    sa.pp.drop_empty(adata)
    adata.obs["batch3"] = np.array(["a", "b", "c"])[np.arange(adata.n_obs) % 3]
    adata, model = fit_copy(sa.tl.vae, adata, **{**TINY, "batch_key": "batch3"})
    assert model.batch_categories == ["a", "b", "c"]
    assert np.isfinite(adata.obsm["X_vae"]).all()


# ---------------------------------------------------------------- training loop

def test_kl_weight_history_warms_up_linearly(sim_session):
    adata, _ = fit_copy(sa.tl.vae, sim_session, kl_warmup_epochs=4, early_stopping=False,
                         **{**TINY, "max_epochs": 6})
    np.testing.assert_allclose(adata.uns["vae"]["history"]["kl_weight"], [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_kl_weight_default_warmup_is_a_third_of_the_epochs(sim_session):
    adata, _ = fit_copy(sa.tl.vae, sim_session, early_stopping=False, **{**TINY, "max_epochs": 6})
    np.testing.assert_allclose(adata.uns["vae"]["history"]["kl_weight"], [0.5, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_early_stopping_exact_patience(sim_session):
    """With min_delta so large that nothing counts as an improvement, training stops
    exactly ``patience`` epochs after the first full-KL epoch."""
    adata, model = fit_copy(sa.tl.vae, sim_session, kl_warmup_epochs=1, patience=3, min_delta=1e9,
                             **{**TINY, "max_epochs": 50})
    hist = adata.uns["vae"]["history"]
    assert hist["stopped_early"]
    assert len(hist["train_loss"]) == 4
    assert hist["best_epoch"] == 0


def test_an_epoch_hook_that_changes_the_objective_restarts_the_best_epoch(sim_session):
    """fit(on_epoch_end=): once the hook says the objective changed, earlier epochs can be
    neither the best (whose weights the model keeps) nor count towards the patience."""
    from scgen_ae.models.vae import VAEConfig, VAEModule
    from scgen_ae.tl._common import training_data
    from scgen_ae.train import TrainConfig, fit

    data, cats = training_data(sim_session, None, "batch", "zinb")
    calls = []

    def changed_at_epoch_5(epoch):
        calls.append(epoch)
        return epoch == 5

    module = VAEModule(VAEConfig(n_genes=sim_session.n_vars, n_batches=len(cats), n_latent=4, n_hidden=32))
    # nothing improves by 1e9: without the hook training stops 8 epochs after the first
    history = fit(module, data, TrainConfig(max_epochs=50, kl_warmup_epochs=1, patience=8, min_delta=1e9,
                                            n_threads=1, progress=False), on_epoch_end=changed_at_epoch_5)
    assert calls == list(range(len(history.train_loss)))
    assert history.stopped_early and history.best_epoch == 6 and len(history.train_loss) == 6 + 1 + 8


def test_early_stopping_on_easy_case(sim_session):
    """A tiny data set with a high learning rate converges quickly; patience 3 stops it
    long before max_epochs."""
    small = sim_session[:120].copy()
    sa.pp.drop_empty(small)
    adata, _ = fit_copy(sa.tl.vae, small, kl_warmup_epochs=1, patience=3, lr=1e-2,
                         **{**TINY, "max_epochs": 300})
    hist = adata.uns["vae"]["history"]
    assert hist["stopped_early"]
    assert len(hist["train_loss"]) < 300
    # the model keeps the best epoch's weights, and best_epoch is where the minimum is
    assert hist["best_epoch"] == int(np.argmin(hist["validation_loss"]))


def test_no_validation_split(sim_session):
    adata, _ = fit_copy(sa.tl.vae, sim_session, validation_fraction=0.0, **TINY)
    hist = adata.uns["vae"]["history"]
    assert len(hist["validation_loss"]) == 0 and len(hist["train_loss"]) == 3


def test_small_batch_size_with_tiny_last_minibatch(sim_session):
    """A last minibatch of 1-2 cells must not reach batch normalisation."""
    adata = sim_session[:64].copy()
    sa.pp.drop_empty(adata)
    # 64 cells, 10% validation -> 58 training cells; 58 = 4 * 14 + 2
    sa.tl.vae(adata, batch_size=14, **TINY)
    assert np.isfinite(adata.obsm["X_vae"]).all()


# ---------------------------------------------------------------- files

def test_h5ad_round_trip_keeps_results(trained, tmp_path):
    adata, _ = trained
    path = tmp_path / "annotated.h5ad"
    adata.write_h5ad(path)
    back = sc.read_h5ad(path)
    np.testing.assert_array_equal(back.obsm["X_vae"], adata.obsm["X_vae"])
    h0, h1 = adata.uns["vae"]["history"], back.uns["vae"]["history"]
    for key in ("train_loss", "validation_loss", "kl_weight"):
        np.testing.assert_array_equal(np.asarray(h1[key]), np.asarray(h0[key]))
    assert int(h1["best_epoch"]) == int(h0["best_epoch"])
    assert set(back.uns["vae"]["params"]) == set(adata.uns["vae"]["params"])
    assert back.uns["vae"]["params"]["n_latent"] == 8
    # and pl.history can read it back
    assert sa.pl.history(back, return_fig=True, key="vae") is not None


def test_save_load_identical(trained, tmp_path):
    adata, model = trained
    path = model.save(tmp_path / "model.npz")
    assert path.exists() and path.suffix == ".npz"
    loaded = sa.VAE.load(path, adata=adata)
    assert loaded.config == model.config
    assert loaded.var_names == model.var_names
    assert loaded.batch_categories == model.batch_categories
    assert loaded.batch_key == model.batch_key and loaded.layer == model.layer
    assert np.array_equal(loaded.get_latent(adata), model.get_latent(adata))
    assert_same_latent(loaded.get_latent(adata), adata.obsm["X_vae"])
    assert np.array_equal(loaded.get_normalized_expression(adata), model.get_normalized_expression(adata))
    np.testing.assert_array_equal(loaded.history["train_loss"], model.history["train_loss"])
    assert "VAE" in repr(loaded)


# ---------------------------------------------------------------- new cells

def test_get_latent_on_subset_equals_rows(trained):
    adata, model = trained
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(adata.n_obs, 60, replace=False))
    sub = adata[idx].copy()
    np.testing.assert_allclose(model.get_latent(sub), adata.obsm["X_vae"][idx], rtol=1e-5, atol=1e-5)
    # order of cells and genes in the new data does not matter
    perm = rng.permutation(sub.n_vars)
    shuffled = sub[::-1, perm].copy()
    np.testing.assert_allclose(model.get_latent(shuffled), adata.obsm["X_vae"][idx][::-1], rtol=1e-5, atol=1e-5)


def test_get_latent_small_minibatches_match(trained):
    adata, model = trained
    np.testing.assert_allclose(model.get_latent(adata, batch_size=7), adata.obsm["X_vae"], rtol=1e-5, atol=1e-5)


def test_get_latent_sample_is_seeded(trained):
    adata, model = trained
    a = model.get_latent(adata, give_mean=False, seed=1)
    b = model.get_latent(adata, give_mean=False, seed=1)
    c = model.get_latent(adata, give_mean=False, seed=2)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert not np.allclose(a, adata.obsm["X_vae"])


def test_get_latent_extra_genes_ignored(trained, cellbench_raw):
    adata, model = trained
    wide = cellbench_raw[:50].copy()  # all 15k genes, in another order
    np.testing.assert_allclose(model.get_latent(wide), adata.obsm["X_vae"][:50], rtol=1e-5, atol=1e-5)


def test_get_latent_cell_without_counts(trained_sim):
    """New cells need not pass the training-time emptiness check: a cell whose counts over
    the model's genes are all zero still gets a finite latent, wherever it is."""
    adata, model = trained_sim
    sub = adata[:20].copy()
    X = sub.X.tolil()
    X[[0, 7, 19], :] = 0  # first, middle and last cell (the last one ends the minibatch)
    sub.X = X.tocsr()
    sub.X.eliminate_zeros()
    z = model.get_latent(sub)
    assert z.shape == (20, model.config.n_latent) and np.isfinite(z).all()
    np.testing.assert_allclose(z[[1, 2, 3]], adata.obsm["X_vae"][[1, 2, 3]], rtol=1e-5, atol=1e-6)
    expr = model.get_normalized_expression(sub).to_numpy()
    assert np.isfinite(expr).all()


# ---------------------------------------------------------------- normalised expression

@pytest.mark.parametrize("transform_batch", [None, "CEL-seq2", "Drop-seq"])
def test_normalized_expression(trained, transform_batch):
    adata, model = trained
    sub = adata[:40]
    expr = model.get_normalized_expression(sub, transform_batch=transform_batch).to_numpy()
    assert expr.shape == (40, adata.n_vars)
    assert (expr >= 0).all() and np.isfinite(expr).all()
    np.testing.assert_allclose(expr.sum(1), 1e4, rtol=1e-3)
    expr2 = model.get_normalized_expression(sub, transform_batch=transform_batch, library_size=100.0).to_numpy()
    np.testing.assert_allclose(expr2.sum(1), 100.0, rtol=1e-3)


def test_normalized_expression_transform_batch_changes_output(trained):
    adata, model = trained
    sub = adata[adata.obs["batch"] == "CEL-seq2"][:30]
    own = model.get_normalized_expression(sub).to_numpy()
    same = model.get_normalized_expression(sub, transform_batch="CEL-seq2").to_numpy()
    other = model.get_normalized_expression(sub, transform_batch="Drop-seq").to_numpy()
    np.testing.assert_allclose(own, same, rtol=1e-5, atol=1e-6)
    assert not np.allclose(own, other)


def test_normalized_expression_observed_library_and_genes(trained):
    adata, model = trained
    sub = adata[:25]
    obs_lib = np.asarray(sub.X.sum(1)).ravel()
    expr = model.get_normalized_expression(sub, library_size="observed").to_numpy()
    np.testing.assert_allclose(expr.sum(1), obs_lib, rtol=1e-3)
    genes = list(adata.var_names[[3, 0, 10]])
    part = model.get_normalized_expression(sub, genes=genes).to_numpy()
    full = model.get_normalized_expression(sub).to_numpy()
    np.testing.assert_allclose(part, full[:, [3, 0, 10]], rtol=1e-5)


# ---------------------------------------------------------------- integration quality on real data

def _uncorrected_pca(adata):
    base = _lognorm(adata)
    sc.pp.pca(base, n_comps=10, random_state=0)
    return base.obsm["X_pca"]


def _integration_check(adata, *, max_epochs, min_gain):
    pca = _uncorrected_pca(adata)
    out, model = fit_copy(sa.tl.vae, adata, batch_key="batch", max_epochs=max_epochs, seed=0, **FAST)
    z = out.obsm["X_vae"]
    ent_pca = sa.metrics.batch_entropy(pca, adata.obs["batch"])
    ent_vae = sa.metrics.batch_entropy(z, adata.obs["batch"])
    ari_vae = sa.metrics.clustering_ari(z, adata.obs["cell_type"])
    report = f"batch entropy PCA {ent_pca:.3f} -> VAE {ent_vae:.3f}; ARI {ari_vae:.3f}"
    assert ent_vae >= ent_pca + min_gain, report
    assert ari_vae >= 0.9, report
    return ent_pca, ent_vae, ari_vae


def test_integration_cellbench_3cl(cellbench_hvg2000):
    _integration_check(cellbench_hvg2000, max_epochs=100, min_gain=0.15)


def test_integration_cellbench_3protocols(cellbench_3protocols):
    _integration_check(cellbench_3protocols, max_epochs=50, min_gain=0.15)


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_drawn_only_when_asked(sim_session, capsys, progress):
    """A bar with the epoch count goes to stderr with progress=True; nothing with False.
    Outside a terminal it is redrawn at most every 30 s, so a short log stays short."""
    fit_copy(sa.tl.vae, sim_session, **{**TINY, "max_epochs": 5, "progress": progress})
    err = capsys.readouterr().err
    if progress:
        assert "training:" in err and "/5" in err
        assert err.count("training:") <= 3  # first draw (+ a timed refresh) + the clearing at the end
    else:
        assert "training:" not in err


def test_bf16_is_used_only_where_the_cpu_has_it():
    """precision="auto": bf16 autocast only with AVX512-BF16 or AMX (emulated bf16 ran 2x slower)."""
    import pathlib

    import torch

    from scgen_ae.train import _bf16_is_native

    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("needs /proc/cpuinfo (Linux) to know the CPU's flags independently")
    flags = set(cpuinfo.read_text().split())
    assert _bf16_is_native(torch.device("cpu")) == bool({"avx512_bf16", "amx_bf16"} & flags)
    assert not _bf16_is_native(torch.device("meta"))
