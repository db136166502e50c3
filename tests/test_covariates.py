"""Covariates besides the batch: categorical_covariate_keys / continuous_covariate_keys."""
from __future__ import annotations

import numpy as np
import pytest
from anndata import AnnData

import scgen_ae as sa
from scgen_ae.covariates import CovariateSpec
from scgen_ae.io import read_model_file, write_model_file

from .conftest import FAST, fit_copy, load_shared

KW = dict(batch_key="batch", n_latent=4, n_hidden=32, max_epochs=3, **FAST)


@pytest.fixture
def sim_cov(sim):
    rng = np.random.default_rng(0)
    sim.obs["donor"] = rng.choice(["d1", "d2", "d3"], sim.n_obs)
    sim.obs["pct_mito"] = rng.uniform(0, 10, sim.n_obs)
    return sim


@pytest.fixture
def trained_cov(sim_cov):
    adata, model = fit_copy(sa.tl.vae, sim_cov, categorical_covariate_keys=["donor"],
                            continuous_covariate_keys=["pct_mito"], **KW)
    return adata, model


# ---------------------------------------------------------------- bad input, refused before any work

@pytest.mark.parametrize("change, kwargs, match", [
    (None, dict(categorical_covariate_keys=["nope"]), "not a column of adata.obs"),
    (None, dict(continuous_covariate_keys="nope"), "not a column of adata.obs"),
    (lambda a: a.obs.__setitem__("pct_mito", np.r_[np.nan, a.obs["pct_mito"].to_numpy()[1:]]),
     dict(continuous_covariate_keys=["pct_mito"]), "missing or infinite"),
    (lambda a: a.obs.__setitem__("pct_mito", np.r_[np.inf, a.obs["pct_mito"].to_numpy()[1:]]),
     dict(continuous_covariate_keys=["pct_mito"]), "missing or infinite"),
    (lambda a: a.obs.__setitem__("pct_mito", 3.0), dict(continuous_covariate_keys=["pct_mito"]), "constant"),
    (lambda a: a.obs.__setitem__("donor", "d1"), dict(categorical_covariate_keys=["donor"]), "single category"),
    (lambda a: a.obs.__setitem__("donor", None), dict(categorical_covariate_keys=["donor"]), "missing values"),
    (None, dict(continuous_covariate_keys=["donor"]), "holds object values|holds .* values"),
    (None, dict(categorical_covariate_keys=["batch"]), "is the batch_key"),
    (None, dict(categorical_covariate_keys=["donor"], continuous_covariate_keys=["donor"]), "both categorical"),
    (None, dict(categorical_covariate_keys=["donor", "donor"]), "twice"),
])
@pytest.mark.parametrize("front", ["vae", "denoise"])
def test_bad_covariates_are_refused_and_leave_adata_untouched(sim_cov, snapshot, front, change, kwargs, match):
    if change is not None:
        change(sim_cov)
    snap = snapshot(sim_cov)
    with pytest.raises(sa.InputError, match=match):
        getattr(sa.tl, front)(sim_cov, batch_key="batch", max_epochs=1, **FAST, **kwargs)
    snap.assert_unchanged(sim_cov)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "high", True, None])
def test_a_bad_covariate_independence_weight_is_refused_before_any_work(sim_cov, snapshot, bad):
    snap = snapshot(sim_cov)
    with pytest.raises(sa.InputError, match="covariate_independence_weight"):
        sa.tl.vae(sim_cov, batch_key="batch", continuous_covariate_keys=["pct_mito"],
                  covariate_independence_weight=bad, max_epochs=1, **FAST)
    snap.assert_unchanged(sim_cov)


def test_apply_time_refuses_unseen_categories_missing_columns_and_bad_values(trained_cov, snapshot):
    adata, model = trained_cov
    query = adata.copy()
    query.obs["donor"] = query.obs["donor"].astype(str).replace({"d1": "d9"})
    snap = snapshot(query)
    with pytest.raises(sa.InputError, match=r"not trained on: \['d9'\].*map_query"):
        model.get_latent(query)
    snap.assert_unchanged(query)
    with pytest.raises(sa.InputError, match="not a column of adata.obs"):
        model.get_latent(AnnData(adata.X, obs=adata.obs.drop(columns="donor"), var=adata.var))
    bad = adata.copy()
    bad.obs["pct_mito"] = np.nan
    with pytest.raises(sa.InputError, match="missing or infinite"):
        model.get_normalized_expression(bad)
    with pytest.raises(sa.InputError, match="not covariates of the model"):
        model.get_normalized_expression(adata, transform_covariates={"batch": "0"})
    with pytest.raises(sa.InputError, match="not a category of the model"):
        model.get_normalized_expression(adata, transform_covariates={"donor": "d9"})
    with pytest.raises(sa.InputError, match="finite number"):
        model.get_normalized_expression(adata, transform_covariates={"pct_mito": "high"})
    snap = snapshot(adata)
    with pytest.raises(sa.InputError, match="not a category of the model"):
        sa.tl.denoise(adata, model=model, transform_covariates={"donor": "d9"})
    snap.assert_unchanged(adata)


def test_the_spec_encodes_with_the_training_categories_and_scaling(sim_cov):
    spec = CovariateSpec.learn(sim_cov.obs, ["donor"], ["pct_mito"], "batch")
    assert spec.categories == (("d1", "d2", "d3"),) and spec.n_continuous == 1
    codes, scaled = spec.encode(sim_cov.obs)
    assert codes.shape == (sim_cov.n_obs, 1) and scaled.shape == (sim_cov.n_obs, 1)
    np.testing.assert_allclose([scaled.mean(), scaled.std()], [0.0, 1.0], atol=1e-5)
    # a subset of the cells keeps the training encoding (codes and scaling are not relearnt)
    sub_codes, sub_scaled = spec.encode(sim_cov.obs.iloc[:10])
    assert np.array_equal(sub_codes, codes[:10]) and np.allclose(sub_scaled, scaled[:10])
    assert CovariateSpec.from_header(spec.to_header()) == spec


# ---------------------------------------------------------------- what covariates do

def test_covariates_change_the_latent_and_are_read_at_apply_time(sim_cov, trained_cov):
    adata, model = trained_cov
    plain, _ = fit_copy(sa.tl.vae, sim_cov, **KW)
    assert not np.allclose(adata.obsm["X_vae"], plain.obsm["X_vae"], atol=1e-3)
    assert adata.uns["vae"]["params"]["categorical_covariate_keys"] == ["donor"]
    z = model.get_latent(adata)
    np.testing.assert_allclose(z, adata.obsm["X_vae"], rtol=1e-5, atol=1e-5)
    shuffled = adata.copy()
    shuffled.obs["pct_mito"] = np.random.default_rng(1).permutation(shuffled.obs["pct_mito"].to_numpy())
    assert not np.allclose(model.get_latent(shuffled), z, atol=1e-4)
    # decoding "as if": a covariate fixed for every cell changes the expression, not the latent
    own = model.get_normalized_expression(adata, return_numpy=True)
    fixed = model.get_normalized_expression(adata, return_numpy=True, transform_covariates={"donor": "d2"})
    same = adata.obs["donor"].to_numpy() == "d2"
    np.testing.assert_allclose(fixed[same], own[same], rtol=1e-4, atol=1e-6)
    assert not np.allclose(fixed[~same], own[~same], rtol=1e-3)


def test_the_independence_penalty_is_a_training_term_of_continuous_covariates_only(trained_cov, trained_sim,
                                                                                   sim_cov):
    history = trained_cov[1].history
    assert trained_cov[1].config.covariate_independence_weight == 1.0
    assert len(history["train_covariate_independence"]) == len(history["train_loss"])
    assert "validation_covariate_independence" not in history  # validation reports the negative ELBO
    assert "train_covariate_independence" not in trained_sim[1].history
    categorical = sa.tl.vae(sim_cov.copy(), categorical_covariate_keys=["donor"], **KW)
    assert "train_covariate_independence" not in categorical.history
    off = sa.tl.vae(sim_cov.copy(), continuous_covariate_keys=["pct_mito"], covariate_independence_weight=0, **KW)
    assert "train_covariate_independence" not in off.history


def test_model_files_without_the_independence_weight_load_without_the_penalty(trained_cov, tmp_path):
    """Files written before the penalty were trained without it: they load saying so, so
    that further training (map_query) matches."""
    adata, model = trained_cov
    header, arrays = read_model_file(model.save(tmp_path / "new"))
    for key in ("format", "format_version", "sha256"):
        header.pop(key, None)
    del header["config"]["covariate_independence_weight"]
    old = sa.VAE.load(write_model_file(tmp_path / "old", header, arrays))
    assert old.config.covariate_independence_weight == 0.0
    np.testing.assert_allclose(old.get_latent(adata), model.get_latent(adata), rtol=1e-5, atol=1e-5)


def test_model_files_keep_the_covariates_and_older_files_still_load(trained_cov, trained_sim, tmp_path):
    adata, model = trained_cov
    loaded = sa.VAE.load(model.save(tmp_path / "with covariates.v1"))
    assert loaded.covariates == model.covariates
    np.testing.assert_allclose(loaded.get_latent(adata), model.get_latent(adata), rtol=1e-5, atol=1e-5)
    # a file written before covariates: no covariates record, no covariate sizes in the config
    sim, plain = trained_sim
    header, arrays = read_model_file(plain.save(tmp_path / "new"))
    for key in ("covariates", "format", "format_version", "package_version", "sha256"):
        header.pop(key, None)
    for key in ("n_covariate_categories", "n_continuous_covariates"):
        header["config"].pop(key)
    old = sa.VAE.load(write_model_file(tmp_path / "old", header, arrays))
    assert not old.covariates
    np.testing.assert_allclose(old.get_latent(sim), plain.get_latent(sim), rtol=1e-5, atol=1e-5)
    # a record that disagrees with the weights is refused, not silently mislabelled
    header, arrays = read_model_file(model.save(tmp_path / "edited"))
    header.pop("sha256", None)
    header["covariates"]["categories"][0] = ["d1", "d2"]
    with pytest.raises(sa.ModelFileError, match="covariate"):
        sa.VAE.load(write_model_file(tmp_path / "edited2", header, arrays))


def test_map_query_learns_new_covariate_categories_and_keeps_the_reference(sim_cov):
    ref = sim_cov[sim_cov.obs["batch"] == sim_cov.obs["batch"].cat.categories[0]].copy()
    query = sim_cov[sim_cov.obs["batch"] != sim_cov.obs["batch"].cat.categories[0]].copy()
    query.obs["donor"] = np.random.default_rng(2).choice(["d1", "d4"], query.n_obs)
    model = sa.tl.vae(ref, categorical_covariate_keys=["donor"], **KW)
    z_ref = model.get_latent(ref)
    mapped = model.map_query(query, batch_key="batch", max_epochs=2, **FAST)
    assert mapped.covariates.categories == (("d1", "d2", "d3", "d4"),)
    assert query.uns["map_query"]["new_covariate_categories"] == {"donor": ["d4"]}
    assert np.array_equal(mapped.get_latent(ref), z_ref)  # the reference cells do not move
    assert query.obsm["X_vae"].shape == (query.n_obs, 4)


def test_the_denoiser_takes_covariates_and_decodes_at_chosen_values(sim_cov):
    model = sa.tl.denoise(sim_cov, batch_key="batch", categorical_covariate_keys=["donor"], max_epochs=2, **FAST,
                          transform_covariates={"donor": "d1"})
    assert model.config.n_covariate_categories == (3,)
    assert sim_cov.uns["denoise"]["params"]["transform_covariates"] == {"donor": "d1"}
    own = model.predict(sim_cov)["mean"]
    assert not np.allclose(own, sim_cov.layers["denoised"], rtol=1e-3)
    d1 = sim_cov.obs["donor"].to_numpy() == "d1"
    np.testing.assert_allclose(own[d1], sim_cov.layers["denoised"][d1], rtol=1e-4, atol=1e-5)
    vae_model = sa.tl.denoise(sim_cov, method="vae", batch_key="batch", continuous_covariate_keys=["pct_mito"],
                              max_epochs=2, n_latent=4, n_hidden=32, layer_added="by_vae", key_added="X_v", **FAST)
    assert vae_model.covariates.continuous_keys == ("pct_mito",)


def test_a_continuous_covariate_is_removed_from_the_latent_space_and_the_cell_lines_stay_apart():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_covariates.py"
    spec = importlib.util.spec_from_file_location("bench_covariates", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    raw = load_shared("cellbench_3cl_3protocols_800genes")
    sa.pp.drop_empty(raw)
    adata = bench.plant_score(raw, seed=0)
    score, lines = adata.obs["score"].to_numpy(), adata.obs["cell_line"].astype(str).to_numpy()

    kw = dict(batch_key="batch", n_latent=8, max_epochs=60, seed=0, **FAST)
    plain, _ = fit_copy(sa.tl.vae, adata, **kw)
    removed, _ = fit_copy(sa.tl.vae, adata, continuous_covariate_keys=["score"], **kw)
    (ridge, knn), (ridge_cov, knn_cov) = (bench.r2(a.obsm["X_vae"], score) for a in (plain, removed))
    assert min(ridge, knn) > 0.8  # the planted effect is in the latent space without the covariate
    # measured (BENCHMARKS.md, covariates): R^2 about 0 with the penalty, 0.2-0.5 without it
    assert ridge_cov < 0.2 * ridge and knn_cov < 0.2 * knn
    purity, purity_cov = (bench.label_purity(a.obsm["X_vae"], lines) for a in (plain, removed))
    assert purity_cov > purity - 0.01


def test_the_scvi_tools_backend_registers_the_covariates(sim_cov, snapshot):
    pytest.importorskip("scvi")
    snap = snapshot(sim_cov)
    out, model = fit_copy(sa.tl.vae, sim_cov, backend="scvi-tools", categorical_covariate_keys=["donor"],
                          continuous_covariate_keys=["pct_mito"], batch_key="batch", n_latent=4, max_epochs=2, **FAST)
    snap.assert_unchanged(sim_cov)
    registry = model.adata_manager.registry["setup_args"]
    assert registry["categorical_covariate_keys"] == ["donor"]
    assert registry["continuous_covariate_keys"] == ["pct_mito"]
    assert model.summary_stats["n_extra_categorical_covs"] == 1
    assert model.summary_stats["n_extra_continuous_covs"] == 1
    assert out.uns["vae"]["params"]["continuous_covariate_keys"] == ["pct_mito"]
    with pytest.raises(ValueError, match="LinearSCVI takes no covariates"):
        sa.tl.vae(sim_cov, backend="scvi-tools", linear_decoder=True, categorical_covariate_keys=["donor"],
                  batch_key="batch", max_epochs=1, **FAST)
