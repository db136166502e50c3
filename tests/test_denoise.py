"""tl.denoise, the DAE object, denoise_benchmark, pl.denoising and the CLI subcommand:
outputs, batch transforms, files, every documented error, held-out accuracy on real data,
and a property test over small random count matrices."""
from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import scgen_ae as sa
from scgen_ae.cli import main as cli_main

from .conftest import FAST, Snapshot, fit_copy
from .test_hypothesis import SETTINGS, _expected_error, count_anndata

TINY = dict(batch_key="batch", n_latent=4, n_hidden=32, max_epochs=3, **FAST)


@pytest.fixture(scope="session")
def denoised_3protocols(cellbench_3protocols):
    """(annotated copy of the 3-protocol CellBench data, DAE), trained once. Do not modify."""
    return fit_copy(sa.tl.denoise, cellbench_3protocols, batch_key="batch", max_epochs=15, return_info=True,
                    seed=0, **FAST)


def _counts(adata):
    return np.asarray(adata.X.toarray() if sp.issparse(adata.X) else adata.X)


# ---------------------------------------------------------------- outputs

def test_denoise_writes_layers_obsm_uns(denoised_3protocols, cellbench_3protocols):
    adata, model = denoised_3protocols
    assert isinstance(model, sa.DAE)
    den = adata.layers["denoised"]
    assert den.shape == adata.shape and den.dtype == np.float32
    assert np.isfinite(den).all() and (den > 0).all()
    # expected counts at the observed library size: each cell's row sums to its library
    np.testing.assert_allclose(den.sum(1), _counts(adata).sum(1), rtol=1e-3)
    assert adata.obsm["X_dae"].shape == (adata.n_obs, 10)  # the documented default n_latent
    drop, disp = adata.layers["denoised_dropout"], adata.layers["denoised_dispersion"]
    assert ((drop >= 0) & (drop <= 1)).all() and (disp > 0).all() and drop.shape == disp.shape == adata.shape
    uns = adata.uns["denoise"]
    assert uns["method"] == "dae" and uns["layer_added"] == "denoised" and uns["key_added"] == "X_dae"
    assert uns["params"]["batch_key"] == "batch" and uns["params"]["corruption"] == "mask"
    assert uns["params"]["max_epochs"] == 15
    hist = uns["history"]
    assert len(hist["train_loss"]) == len(hist["validation_loss"]) <= 15
    assert hist["validation_loss"][hist["best_epoch"]] < hist["validation_loss"][0]  # training helped
    # X (the counts) untouched; the input (copy=True) untouched
    assert np.array_equal(_counts(adata), _counts(cellbench_3protocols))
    assert "denoised" not in cellbench_3protocols.layers and "denoise" not in cellbench_3protocols.uns


def test_denoised_tracks_the_counts(denoised_3protocols):
    """Denoised values follow the data: per gene, the mean over cells matches the raw
    mean, and per cell they follow the cell's own counts more closely than the gene-share
    baseline (same gene profile for every cell, scaled by its library) does."""
    adata, _ = denoised_3protocols
    raw = _counts(adata)
    den = adata.layers["denoised"]
    assert np.corrcoef(np.log1p(raw.mean(0)), np.log1p(den.mean(0)))[0, 1] > 0.98
    base = raw.sum(1, keepdims=True) * (raw.sum(0) / raw.sum())[None, :]
    cells = range(0, adata.n_obs, 25)
    r_den = np.median([np.corrcoef(np.log1p(raw[i]), np.log1p(den[i]))[0, 1] for i in cells])
    r_base = np.median([np.corrcoef(np.log1p(raw[i]), np.log1p(base[i]))[0, 1] for i in cells])
    assert r_den > r_base + 0.02, (r_den, r_base)


def test_transform_batch_and_library_size(denoised_3protocols):
    adata, model = denoised_3protocols
    sub = adata[adata.obs["batch"] == "CEL-seq2"][:40].copy()
    own = model.predict(sub)["mean"]
    same = model.predict(sub, transform_batch="CEL-seq2")["mean"]
    other = model.predict(sub, transform_batch="10x")["mean"]
    np.testing.assert_allclose(own, same, rtol=1e-5)
    assert not np.allclose(own, other, rtol=1e-2)
    np.testing.assert_allclose(own, adata[sub.obs_names].layers["denoised"], rtol=1e-4, atol=1e-5)
    norm = sa.tl.denoise(sub, model=model, library_size=1e4, layer_added="norm")
    assert norm is model
    np.testing.assert_allclose(sub.layers["norm"].sum(1), 1e4, rtol=1e-3)


@pytest.mark.parametrize("option", ["genes", "gene_list"])
def test_genes_go_to_obsm_and_match_full(denoised_3protocols, option):
    adata, model = denoised_3protocols
    sub = adata[:60].copy()
    genes = list(adata.var_names[[5, 0, 42]])
    sa.tl.denoise(sub, model=model, **{option: genes}, layer_added="few", return_info=True)
    frame = sub.obsm["few"]
    assert list(frame.columns) == genes and list(frame.index) == list(sub.obs_names)
    np.testing.assert_allclose(frame.to_numpy(), adata.layers["denoised"][:60][:, [5, 0, 42]], rtol=1e-4)
    assert sub.obsm["few_dropout"].shape == (60, 3)
    assert "few" not in sub.layers and "denoised" not in set(sub.layers) - set(adata.layers)
    assert sub.uns["denoise"]["params"]["genes"] == genes


def _same_up_to_gemm_rounding(actual, expected):
    """Each cell's values depend on its own row only (batch norm runs on its stored statistics
    in evaluation), but a matrix product over another number of rows may take another BLAS
    kernel, whose sums round differently: equal to float32 rounding, not bit for bit."""
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_chunked_output_equals_unchunked(denoised_3protocols, trained):
    adata, model = denoised_3protocols
    sub = adata[:300].copy()
    for chunk in (7, 300):
        sa.tl.denoise(sub, model=model, chunk_size=chunk, layer_added=f"c{chunk}", return_info=True)
    for key in ("c{}", "c{}_dropout", "c{}_dispersion"):
        _same_up_to_gemm_rounding(sub.layers[key.format(7)], sub.layers[key.format(300)])
    assert sub.uns["denoise"]["params"]["chunk_size"] == 300
    vae_data, vae_model = trained
    part = vae_data[:120].copy()
    for chunk in (11, 120):
        sa.tl.denoise(part, model=vae_model, chunk_size=chunk, layer_added=f"v{chunk}")
    _same_up_to_gemm_rounding(part.layers["v11"], part.layers["v120"])


def test_float16_output_is_the_float32_output_cast(denoised_3protocols, trained, caplog):
    """Each chunk is decoded in float32 and rounded once as it is stored."""
    adata, model = denoised_3protocols
    vae_data, vae_model = trained
    for data, mdl in ((adata[:200].copy(), model), (vae_data[:100].copy(), vae_model)):
        sa.tl.denoise(data, model=mdl, layer_added="f32")
        with caplog.at_level("INFO", logger="scgen_ae"):
            sa.tl.denoise(data, model=mdl, layer_added="f16", dtype="float16", chunk_size=64)
        f16, f32 = data.layers["f16"], data.layers["f32"]
        assert f16.dtype == np.float16 and f16.nbytes * 2 == f32.nbytes
        assert data.uns["denoise"]["params"]["dtype"] == "float16"
        # float16's rounding (relative 2**-11, absolute 2**-25 among its subnormals), plus the float32
        # GEMM rounding of another chunk size, which can tip a value to the neighbouring float16
        np.testing.assert_allclose(f16.astype(np.float32), f32, rtol=2**-11 + 1e-5, atol=2**-24)
        assert np.mean(f16 == f32.astype(np.float16)) > 0.999
        assert f"wrote layers['f16']: {data.n_obs} x {data.n_vars} float16, {f16.nbytes / 1e6:.1f} MB" in caplog.text
        caplog.clear()
    sub = adata[:50].copy()
    sa.tl.denoise(sub, model=model, gene_list=list(adata.var_names[:4]), dtype="float16", layer_added="few")
    assert (sub.obsm["few"].dtypes == np.float16).all()


def test_float16_overflow_refused(denoised_3protocols, snapshot):
    sub = denoised_3protocols[0][:40].copy()
    snap = snapshot(sub)
    with pytest.raises(sa.InputError, match=r"exceed float16's largest value.*nothing was written.*float32"):
        sa.tl.denoise(sub, model=denoised_3protocols[1], dtype="float16", library_size=1e9, layer_added="big")
    snap.assert_unchanged(sub)


def test_save_load_gives_same_predictions(denoised_3protocols, tmp_path):
    adata, model = denoised_3protocols
    path = model.save(tmp_path / "dae.npz")
    loaded = sa.DAE.load(path, adata=adata)
    assert loaded.config == model.config
    np.testing.assert_allclose(loaded.predict(adata[:30])["mean"], adata.layers["denoised"][:30], rtol=1e-5)
    with pytest.raises(sa.ModelFileError, match="not a VAE"):
        sa.VAE.load(path)


def test_method_vae_uses_the_vae_decoder(trained):
    adata, vae_model = trained
    sub = adata[:50].copy()
    sa.tl.denoise(sub, model=vae_model, transform_batch="Drop-seq")
    expected = vae_model.get_normalized_expression(sub, transform_batch="Drop-seq", library_size="observed")
    np.testing.assert_allclose(sub.layers["denoised"], expected, rtol=1e-5)
    np.testing.assert_allclose(sub.obsm["X_vae"], vae_model.get_latent(sub), rtol=1e-5)
    assert sub.uns["denoise"]["method"] == "vae"


def test_method_vae_trains_inside_without_touching_other_keys(sim, snapshot):
    snap = snapshot(sim)
    model = sa.tl.denoise(sim, method="vae", transform_batch="batch1", **TINY)
    assert isinstance(model, sa.VAE) and model.config.n_latent == 4
    assert set(sim.layers) == {"denoised"} and set(sim.obsm) == {"X_vae"} and "vae" not in sim.uns
    assert np.isfinite(sim.layers["denoised"]).all()
    np.testing.assert_array_equal(_counts(sim), snap.X)


def test_method_vae_warns_at_the_callers_line(sim):
    """tl.vae's own warnings, from the VAE that denoise trains, name the line that called denoise."""
    one = sim[sim.obs["batch"] == "batch0"].copy()
    with pytest.warns(UserWarning, match="single category") as caught:
        sa.tl.denoise(one, method="vae", **TINY)
    assert {w.filename for w in caught if "single category" in str(w.message)} == {__file__}


@pytest.mark.parametrize("opts", [dict(corruption="none"), dict(corruption="thinning"),
                                  dict(corruption="gaussian", corruption_rate=0.5), dict(likelihood="nb"),
                                  dict(likelihood="poisson"), dict(dispersion="gene-cell"),
                                  dict(dispersion="gene-batch"), dict(hidden_loss_weight=0.5),
                                  dict(mean_link="exp")], ids=str)
def test_options_train(sim_session, opts):
    adata, model = fit_copy(sa.tl.denoise, sim_session, **TINY, **opts)
    assert np.isfinite(adata.layers["denoised"]).all()
    assert np.isfinite(adata.uns["denoise"]["history"]["train_loss"]).all()
    for k, val in opts.items():
        assert getattr(model.config, k) == val


def test_same_seed_same_output(sim_session):
    a = sa.tl.denoise(sim_session, copy=True, seed=3, **TINY).layers["denoised"]
    b = sa.tl.denoise(sim_session, copy=True, seed=3, **TINY).layers["denoised"]
    c = sa.tl.denoise(sim_session, copy=True, seed=4, **TINY).layers["denoised"]
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_overwrite_counts_when_asked(sim):
    sa.tl.denoise(sim, layer_added=None, overwrite=True, **TINY)
    assert not np.allclose(_counts(sim), np.round(_counts(sim)))  # X now holds expected counts
    assert set(sim.layers) == set()


# ---------------------------------------------------------------- errors leave adata unchanged

@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(layer_added=None), sa.InputError, r"would overwrite adata.X.*overwrite=True"),
    (dict(transform_batch="batch9"), sa.InputError, r"transform_batch='batch9' is not a batch.*batch0"),
    (dict(transform_batch="batch0", batch_key=None), sa.InputError, r"needs batch_key="),
    (dict(genes=["gene0", "NOPE"]), sa.InputError, r"not in adata.var_names.*NOPE"),
    (dict(gene_list=["gene0", "NOPE", "NOPE2"]), sa.InputError, r"names 2 genes that are not in adata.var_names: "
                                                                 r"\['NOPE', 'NOPE2'\]"),
    (dict(gene_list=[]), sa.InputError, r"gene_list= is empty"),
    (dict(gene_list="gene0"), sa.InputError, r"is one string; pass a list"),
    (dict(gene_list=["gene0", "gene0"]), sa.InputError, r"\['gene0'\] more than once"),
    (dict(genes=["gene0"], gene_list=["gene0"]), sa.InputError, r"the same option.*pass one"),
    (dict(dtype="int8"), sa.InputError, r"dtype='int8'.*'float32'.*'float16'"),
    (dict(dtype="float64"), sa.InputError, r"dtype='float64'"),
    (dict(chunk_size=0), sa.InputError, r"chunk_size=0; pass a whole number"),
    (dict(method="vae", return_info=True), ValueError, r"return_info=True is available for method='dae' only"),
    (dict(likelihood="poisson", return_info=True), ValueError, r"Poisson has no dispersion"),
    (dict(library_size="cpm"), ValueError, r"library_size='cpm'"),
    (dict(method="dca"), ValueError, r"method='dca'"),
    (dict(method="vae", backend="scvi-tools"), ValueError, r"backend='scvi-tools': this front trains the native VAE"),
    (dict(max_epoch=3), TypeError, r"max_epoch"),
    (dict(corruption="dropout"), ValueError, r"corruption='dropout'"),
    (dict(batch_key="donor"), sa.InputError, r"batch_key='donor' is not a column"),
    # the columns listed are adata's, not those of the light AnnData the VAE trains on
    (dict(method="vae", label_key="celltype"), sa.InputError, r"label_key='celltype' is not a column.*'batch'.*, "),
], ids=lambda x: x if isinstance(x, str) else None)
def test_refused_cleanly(sim, snapshot, kwargs, exc, match):
    snap = snapshot(sim)
    with pytest.raises(exc, match=match):
        sa.tl.denoise(sim, **{**TINY, **kwargs})
    snap.assert_unchanged(sim)


def test_counts_layer_is_protected_and_lognormalised_refused(sim, snapshot):
    sim.layers["counts"] = sim.X.copy()
    sc.pp.normalize_total(sim, target_sum=1e4)
    sc.pp.log1p(sim)
    snap = snapshot(sim)
    with pytest.raises(sa.InputError, match=r"would overwrite adata.layers\['counts'\]"):
        sa.tl.denoise(sim, layer="counts", layer_added="counts", **TINY)
    with pytest.raises(sa.InputError, match=r"log-normalised.*layer='counts'"):
        sa.tl.denoise(sim, **TINY)
    snap.assert_unchanged(sim)
    sa.tl.denoise(sim, layer="counts", **TINY)  # denoising the counts layer works, X stays log-normalised
    assert "denoised" in sim.layers and np.array_equal(_counts(sim), snap.X)


def test_model_of_other_kind_refused(trained_sim, sim, snapshot):
    _, vae_model = trained_sim
    snap = snapshot(sim)
    with pytest.raises(ValueError, match=r"method='dae' but model= is a VAE"):
        sa.tl.denoise(sim, model=vae_model, method="dae")
    with pytest.raises(TypeError, match=r"takes no training options"):
        sa.tl.denoise(sim, model=vae_model, max_epochs=3)
    with pytest.raises(sa.InputError, match=r"transform_batch='x' is not a batch"):
        sa.tl.denoise(sim, model=vae_model, transform_batch="x")
    snap.assert_unchanged(sim)


# ---------------------------------------------------------------- held-out evaluation

def test_holdout_nonzeros_properties(cellbench_3protocols):
    X = cellbench_3protocols.X
    before = X.copy()
    corrupted, rows, cols, truth = sa.tl.holdout_nonzeros(X, 0.1, seed=1)
    assert (X != before).nnz == 0  # input untouched
    assert abs(len(truth) / X.nnz - 0.1) < 0.01
    np.testing.assert_array_equal(np.asarray(X[rows, cols]).ravel(), truth)
    assert (np.asarray(corrupted[rows, cols]).ravel() == 0).all()
    assert corrupted.nnz == X.nnz - len(truth)
    again = sa.tl.holdout_nonzeros(X, 0.1, seed=1)[3]
    assert np.array_equal(again, truth)


def test_heldout_errors_definition():
    out = sa.tl.heldout_errors(np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 1.0]))
    assert out["median_ae"] == 0.5 and out["mean_ae"] == pytest.approx(3.5 / 3) and out["n_heldout"] == 3
    assert out["spearman"] == pytest.approx(-0.5)


@pytest.mark.parametrize("fixture", ["cellbench_3protocols", "kang_hvg"])
def test_denoiser_beats_gene_share_baseline_on_heldout_counts(request, fixture, snapshot):
    adata = request.getfixturevalue(fixture)
    snap = snapshot(adata)
    table = sa.tl.denoise_benchmark(adata, batch_key="batch", fraction=0.1, seed=0, max_epochs=25, **FAST)
    ours, base = table.loc["denoise"], table.loc["baseline"]
    report = table.round(3).to_string()
    assert ours["median_ae"] < base["median_ae"], report
    assert ours["pearson"] > base["pearson"] + 0.05, report  # kang: 0.83 vs 0.73
    assert ours["spearman"] > base["spearman"], report
    snap.assert_unchanged(adata)


# ---------------------------------------------------------------- plot and CLI

def test_pl_denoising(denoised_3protocols, tmp_path):
    adata, _ = denoised_3protocols
    genes = list(adata.var_names[:3])
    fig = sa.pl.denoising(adata, return_fig=True, genes=genes, save=tmp_path / "d.png")
    assert len(fig.axes) == 3 * 3 and (tmp_path / "d.png").stat().st_size > 0
    with pytest.raises(sa.InputError, match=r"run sa.tl.denoise"):
        sa.pl.denoising(adata, genes=genes, denoised="nothing")
    with pytest.raises(sa.InputError, match=r"not found: \['NOPE'\]"):
        sa.pl.denoising(adata, genes=["NOPE"])


def test_cli_denoise(sim_session, tmp_path):
    import anndata as ad

    src, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    sim_session.write_h5ad(src)
    rc = cli_main(["denoise", str(src), "-o", str(out), "--batch-key", "batch", "--max-epochs", "2",
                   "--threads", "1", "--quiet", "--transform-batch", "batch0"])
    assert rc == 0
    res = ad.read_h5ad(out)
    assert res.layers["denoised"].shape == sim_session.shape and res.uns["denoise"]["params"]["transform_batch"] == "batch0"
    assert cli_main(["denoise", str(src), "--batch-key", "nope", "--quiet"]) == 2


# ---------------------------------------------------------------- properties

@settings(SETTINGS, max_examples=12)
@given(data=count_anndata(), likelihood=st.sampled_from(["zinb", "nb", "poisson"]),
       corruption=st.sampled_from(["mask", "thinning", "none"]))
def test_denoise_trains_or_refuses_cleanly(data, likelihood, corruption):
    adata, batch_key = data
    snap = Snapshot(adata)
    expected = _expected_error(adata, batch_key)
    try:
        sa.tl.denoise(adata, batch_key=batch_key, likelihood=likelihood, corruption=corruption, n_latent=3,
                      n_hidden=16, max_epochs=2, batch_size=8, **FAST)
    except sa.InputError as err:
        assert expected is not None, f"valid input refused: {err}"
        snap.assert_unchanged(adata)
        return
    assert expected is None, f"invalid input accepted (validators say: {expected})"
    den = adata.layers["denoised"]
    assert den.shape == adata.shape and np.isfinite(den).all() and (den >= 0).all()
    np.testing.assert_allclose(den.sum(1), _counts(adata).sum(1), rtol=1e-3)
    assert adata.obsm["X_dae"].shape == (adata.n_obs, 3)
