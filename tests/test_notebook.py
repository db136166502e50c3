"""Working in a notebook: one return rule, views refused, settings (threads, verbosity,
device), scanpy's plotting semantics, scvi-tools' method names, the command line."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from anndata import AnnData

import scgen_ae as sa
from scgen_ae import _settings

from .conftest import FAST

TINY = dict(max_epochs=2, **FAST)
TINY_VAE = dict(batch_key="batch", n_latent=4, n_hidden=16, **TINY)


@pytest.fixture
def restore_settings():
    """Leave sa.settings (and scanpy's verbosity) as they were."""
    import scanpy as sc

    saved = dict(vars(sa.settings))
    scanpy_verbosity = sc.settings.verbosity
    yield sa.settings
    vars(sa.settings).update(saved)
    sc.settings.verbosity = scanpy_verbosity


# ---------------------------------------------------------------- views and copies

def _reference_model(sim_session):
    return sa.tl.vae(sim_session.copy(), **TINY_VAE, mmd_weight=0)


WRITING_FRONTS = {
    "tl.vae": lambda a, _: sa.tl.vae(a, **TINY_VAE),
    "tl.denoise": lambda a, _: sa.tl.denoise(a, batch_key="batch", **TINY),
    "tl.nmf": lambda a, _: sa.tl.nmf(a, n_components=3, max_iter=5),
    "tl.lda": lambda a, _: sa.tl.lda(a, n_topics=3, **TINY),
    "tl.remove_batch": lambda a, m: sa.tl.remove_batch(m, a, batch_key="batch"),
    "tl.batch_composition": lambda a, _: sa.tl.batch_composition(a, batch_key="batch", groupby="cell_type"),
    "tl.differential_expression": lambda a, m: sa.tl.differential_expression(m, a, groupby="cell_type", group1="group0"),
    "pp.drop_empty": lambda a, _: sa.pp.drop_empty(a),
    "pp.highly_variable": lambda a, _: sa.pp.highly_variable(a, n_top_genes=50),
    "model.map_query": lambda a, m: m.map_query(a, batch_key="batch", max_epochs=1, **FAST),
}


@pytest.mark.parametrize("front", list(WRITING_FRONTS))
def test_a_view_is_refused_with_the_fix_and_the_parent_is_untouched(sim_session, front, snapshot):
    parent = sim_session.copy()
    model = _reference_model(sim_session) if front in ("tl.remove_batch", "tl.differential_expression",
                                                        "model.map_query") else None
    if front == "tl.remove_batch":
        parent.obsm["X_vae"] = model.get_latent(parent)
    snap = snapshot(parent)
    view = parent[:, parent.var_names[:120]] if front != "tl.remove_batch" else parent[:200]
    assert view.is_view
    with pytest.raises(sa.InputError, match=r"adata is a view.*\.copy\(\)"):
        WRITING_FRONTS[front](view, model)
    snap.assert_unchanged(parent)


def test_transfer_labels_refuses_a_view(sim_session):
    reference = sim_session.copy()
    reference.obsm["X_vae"] = np.asarray(reference.obs_vector("batch") == "batch1", float)[:, None] + \
        np.random.default_rng(0).normal(size=(reference.n_obs, 2))
    query = reference.copy()
    with pytest.raises(sa.InputError, match=r"adata is a view"):
        sa.tl.transfer_labels(query[:100], reference=reference, label_key="cell_type")
    assert "cell_type_prediction" not in query.obs and len(query.obsm) == 1


def test_a_view_with_copy_true_returns_an_annotated_real_anndata(sim_session):
    parent = sim_session.copy()
    out = sa.tl.vae(parent[:, parent.var_names[:120]], copy=True, **TINY_VAE)
    assert isinstance(out, AnnData) and not out.is_view and out.n_vars == 120
    assert "X_vae" in out.obsm and "X_vae" not in parent.obsm


@pytest.mark.parametrize("front, uns_key, model_type", [
    (lambda a: sa.tl.vae(a, copy=True, **TINY_VAE), "vae", sa.VAE),
    (lambda a: sa.tl.denoise(a, batch_key="batch", copy=True, **TINY), "denoise", sa.models.DAE),
    (lambda a: sa.tl.nmf(a, n_components=3, max_iter=5, copy=True), "nmf", sa.NMF),
    (lambda a: sa.tl.lda(a, n_topics=3, copy=True, **TINY), "lda", sa.LDA),
], ids=["vae", "denoise", "nmf", "lda"])
def test_copy_true_returns_the_anndata_and_the_model_is_reachable(sim_session, snapshot, front, uns_key, model_type):
    snap = snapshot(sim_session)
    out = front(sim_session)
    assert isinstance(out, AnnData) and out is not sim_session
    assert uns_key in out.uns
    assert isinstance(sa.tl.get_model(out, uns_key), model_type)
    snap.assert_unchanged(sim_session)


def test_copy_false_returns_the_model_and_get_model_finds_it(sim):
    model = sa.tl.vae(sim, **TINY_VAE)
    assert isinstance(model, sa.VAE) and sa.tl.get_model(sim) is model
    with pytest.raises(sa.InputError, match="uns_key='nmf'.*models here: \\['vae'\\]"):
        sa.tl.get_model(sim, "nmf")
    with pytest.raises(sa.InputError, match="No model"):
        sa.tl.get_model(sim.copy())  # a copy made afterwards has no model of its own


@pytest.mark.parametrize("front, kwargs", [
    (sa.tl.remove_batch, None), (sa.tl.batch_composition, dict(batch_key="batch", groupby="cell_type")),
    (sa.pp.drop_empty, {}),
], ids=["remove_batch", "batch_composition", "drop_empty"])
def test_annotating_fronts_return_the_copy_or_none(sim_session, front, kwargs):
    adata = sim_session.copy()
    if kwargs is None:  # remove_batch takes the model first
        model = _reference_model(sim_session)
        adata.obsm["X_vae"] = model.get_latent(adata)
        call = lambda **kw: front(model, adata, batch_key="batch", **kw)  # noqa: E731
    else:
        call = lambda **kw: front(adata, **kwargs, **kw)  # noqa: E731
    out = call(copy=True)
    assert isinstance(out, AnnData) and out is not adata
    assert call() is None


# ---------------------------------------------------------------- settings

def test_training_sets_its_threads_and_restores_the_callers(sim, restore_settings, monkeypatch):
    from scgen_ae.tl import _vae

    seen = []
    real_fit = _vae.fit

    def recording_fit(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(_vae, "fit", recording_fit)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what numba left after sc.pp.highly_variable_genes
        sa.settings.n_threads = 2
        sa.tl.vae(sim, batch_key="batch", n_latent=4, n_hidden=16, max_epochs=1, progress=False, copy=True)
        assert seen == [2]  # the setting, not the count the caller's process was left with
        assert torch.get_num_threads() == 1  # the caller's count again
        sa.tl.vae(sim, batch_key="batch", n_latent=4, n_hidden=16, max_epochs=1, progress=False, n_threads=3, copy=True)
        assert seen[-1] == 3 and torch.get_num_threads() == 1  # a call's own value wins
    finally:
        torch.set_num_threads(before)


def test_scanpy_verbosity_zero_silences_the_progress_bar(sim, restore_settings, capsys):
    import scanpy as sc

    kw = dict(batch_key="batch", n_latent=4, n_hidden=16, max_epochs=2, n_threads=1, progress=True, copy=True)
    sc.settings.verbosity = 1
    sa.tl.vae(sim, **kw)
    assert "training" in capsys.readouterr().err  # the bar is drawn when not silenced
    sc.settings.verbosity = 0
    sa.tl.vae(sim, **kw)
    assert "training" not in capsys.readouterr().err
    sc.settings.verbosity = 1
    sa.settings.progress_bar = "none"
    sa.tl.vae(sim, **kw)
    assert "training" not in capsys.readouterr().err


def test_settings_seed_is_the_default_seed(sim_session, restore_settings):
    kw = dict(TINY_VAE, copy=True)
    a = sa.tl.vae(sim_session, seed=5, **kw).obsm["X_vae"]
    sa.settings.seed = 5
    b = sa.tl.vae(sim_session, **kw).obsm["X_vae"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_logging_follows_the_verbosity(restore_settings, capsys):
    sa.settings.verbosity = 2
    _settings.logger.info("stored the UMAP in obsm['X_umap']")
    assert "stored the UMAP" in capsys.readouterr().err
    sa.settings.verbosity = 1
    _settings.logger.info("hidden at verbosity 1")
    assert "hidden" not in capsys.readouterr().err


def test_bad_settings_are_refused(restore_settings):
    for name, value in (("n_threads", 0), ("seed", -1), ("verbosity", 7), ("progress_bar", "fancy")):
        with pytest.raises(sa.InputError, match=name):
            setattr(sa.settings, name, value)


@pytest.mark.parametrize("device", ["mps", "cuda"])
def test_an_unavailable_device_is_refused_before_any_work(sim, snapshot, device, restore_settings):
    available = torch.cuda.is_available() if device == "cuda" else torch.backends.mps.is_available()
    if available:
        pytest.skip(f"{device} is available here")
    snap = snapshot(sim)
    with pytest.raises(sa.InputError, match=f"device='{device}'.*device='cpu'"):
        sa.tl.vae(sim, device=device, **TINY_VAE)
    snap.assert_unchanged(sim)
    with pytest.raises(sa.InputError, match=f"device='{device}'"):
        sa.settings.device = device


def test_no_widget_bar_without_ipywidgets(monkeypatch):
    from tqdm import std

    monkeypatch.setitem(sys.modules, "ipykernel", sys.modules.get("ipykernel") or object())
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails as when not installed
    assert _settings.progress_bar_class() is std.tqdm


def test_import_emits_no_warning():
    import subprocess

    code = ("import warnings; warnings.simplefilter('error')\n"
            "import scgen_ae\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------- plots: scanpy's semantics

@pytest.fixture(scope="module")
def plotted(sim_session):
    """The small data with a VAE latent space, LDA topics and NMF factors: every plot has its input."""
    adata = sim_session.copy()
    sa.tl.vae(adata, **TINY_VAE)
    sa.tl.lda(adata, n_topics=3, **TINY)
    sa.tl.nmf(adata, n_components=3, max_iter=5)
    adata.layers["denoised"] = adata.X.toarray() * 0.5
    return adata


PLOTS = {
    "latent": lambda a, **kw: sa.pl.latent(a, color=["batch", "cell_type"], **kw),
    "history": lambda a, **kw: sa.pl.history(a, key="vae", **kw),
    "topics": lambda a, **kw: sa.pl.topics(a, key="lda", n_genes=5, **kw),
    "loadings": lambda a, **kw: sa.pl.loadings(a, basis="X_nmf", components=[0, 1], **kw),
    "denoising": lambda a, **kw: sa.pl.denoising(a, genes=list(a.var_names[:2]), **kw),
    "report": lambda a, **kw: sa.pl.report(a, key="vae", color="batch", **kw),
}


@pytest.mark.parametrize("name", list(PLOTS))
def test_plots_follow_scanpys_show_and_return_fig(plotted, name):
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    adata = plotted.copy()
    draw = PLOTS[name]
    assert draw(adata) is None  # shown (Agg: nothing to see) and not returned: one figure per Jupyter cell
    assert draw(adata, show=True) is None
    axes = draw(adata, show=False)
    assert isinstance(axes, Axes) or (isinstance(axes, list) and axes and all(isinstance(a, Axes) for a in axes))
    assert isinstance(draw(adata, return_fig=True), Figure)
    plt.close("all")


def test_save_writes_the_file_and_does_not_show(plotted, tmp_path):
    path = tmp_path / "latent.png"
    ax = sa.pl.history(plotted, key="vae", save=path, show=False)
    assert path.read_bytes()[:4] == b"\x89PNG" and ax.get_xlabel() == "epoch"


def test_save_alone_shows_and_returns_none_as_scanpy(plotted, tmp_path):
    # a returned list of Axes would print under the figure in Jupyter
    path = tmp_path / "denoising.png"
    assert PLOTS["denoising"](plotted, save=path) is None
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_latent_draws_scanpys_umap_of_the_same_representation(plotted, monkeypatch):
    import scanpy as sc

    from scgen_ae.pl import _embedding

    adata = plotted.copy()
    sc.pp.neighbors(adata, use_rep="X_vae", n_neighbors=10)
    sc.tl.umap(adata)
    monkeypatch.setattr(_embedding, "embed_2d", lambda *a, **k: pytest.fail("computed although X_umap is there"))
    ax = sa.pl.latent(adata, basis="X_vae", color="batch", show=False)
    np.testing.assert_array_equal(ax.collections[0].get_offsets()[:, 0].min(), adata.obsm["X_umap"][:, 0].min())
    assert "X_vae_umap" not in adata.obsm
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("UMAP1", "UMAP2")
    assert ax.get_title() == "batch\nVAE latent space (UMAP)"
    assert ax.get_legend() is not None


def test_latent_computes_only_what_is_missing_and_says_where(plotted, restore_settings, capsys):
    import scanpy as sc

    adata = plotted.copy()
    sc.pp.neighbors(adata, use_rep="X_lda", n_neighbors=10)  # a UMAP of another representation
    sc.tl.umap(adata)
    other = adata.obsm["X_umap"].copy()
    sa.settings.verbosity = 2
    sa.pl.latent(adata, basis="X_vae", color="batch", show=False)
    assert "stored it in obsm['X_vae_umap']" in capsys.readouterr().err
    np.testing.assert_array_equal(adata.obsm["X_umap"], other)  # the user's UMAP is left alone
    assert adata.obsm["X_vae_umap"].shape == (adata.n_obs, 2)


def test_a_misspelt_color_is_refused_before_any_embedding(plotted, monkeypatch):
    from scgen_ae.pl import _embedding

    monkeypatch.setattr(_embedding, "embed_2d", lambda *a, **k: pytest.fail("embedding computed"))
    adata = plotted.copy()
    with pytest.raises(sa.InputError, match="color='batchh'"):
        sa.pl.latent(adata, color="batchh", recompute=True)
    with pytest.raises(sa.InputError, match="color='batchh'"):
        sa.pl.report(adata, color="batchh", recompute=True)


def test_topic_gene_names_do_not_overlap(plotted):
    fig = sa.pl.topics(plotted, key="lda", n_genes=10, return_fig=True)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = sorted((t.get_window_extent(renderer) for t in ax.get_yticklabels()), key=lambda b: b.y0)
        assert len(boxes) == 10
        assert all(lower.y1 <= upper.y0 + 0.5 for lower, upper in zip(boxes, boxes[1:]))
        xboxes = sorted((t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()),
                        key=lambda b: b.x0)
        assert all(left.x1 <= right.x0 for left, right in zip(xboxes, xboxes[1:]))
    assert fig.axes[0].get_title() == "topic 0" and fig.axes[0].get_xlabel() == "loading"


# ---------------------------------------------------------------- scvi-tools' method names

@pytest.fixture(scope="module")
def vae_sim(sim_session):
    adata = sim_session.copy()
    return adata, sa.tl.vae(adata, **{**TINY_VAE, "max_epochs": 3})


def test_get_latent_representation_is_get_latent(vae_sim):
    adata, model = vae_sim
    np.testing.assert_array_equal(model.get_latent_representation(adata), model.get_latent(adata))
    np.testing.assert_array_equal(model.get_latent_representation(adata, give_mean=False, seed=1),
                                  model.get_latent(adata, give_mean=False, seed=1))


def test_get_normalized_expression_returns_a_named_frame(vae_sim):
    adata, model = vae_sim
    frame = model.get_normalized_expression(adata)
    assert frame.shape == adata.shape
    assert list(frame.index) == list(adata.obs_names) and list(frame.columns) == model.var_names
    array = model.get_normalized_expression(adata, return_numpy=True)
    assert isinstance(array, np.ndarray)
    np.testing.assert_allclose(frame.to_numpy(), array)
    np.testing.assert_allclose(array.sum(1), 1e4, rtol=1e-3)
    genes = list(adata.var_names[[5, 1]])
    part = model.get_normalized_expression(adata, gene_list=genes)
    assert list(part.columns) == genes
    np.testing.assert_allclose(part.to_numpy(), frame[genes].to_numpy(), rtol=1e-5)


def test_a_list_of_transform_batches_is_averaged(vae_sim):
    adata, model = vae_sim
    each = [model.get_normalized_expression(adata, transform_batch=b, return_numpy=True) for b in ("batch0", "batch1")]
    both = model.get_normalized_expression(adata, transform_batch=["batch0", "batch1"], return_numpy=True)
    np.testing.assert_allclose(both, (each[0] + each[1]) / 2, rtol=1e-5)
    assert not np.allclose(each[0], each[1])  # the average is not trivially either one
    with pytest.raises(sa.InputError, match="batch7"):
        model.get_normalized_expression(adata, transform_batch=["batch0", "batch7"])


def test_n_samples_averages_draws_of_z(vae_sim):
    adata, model = vae_sim
    at_mean = model.get_normalized_expression(adata, return_numpy=True)
    sampled = model.get_normalized_expression(adata, n_samples=20, return_numpy=True)
    assert sampled.shape == at_mean.shape and not np.allclose(sampled, at_mean)
    np.testing.assert_allclose(sampled.sum(1), 1e4, rtol=1e-3)
    np.testing.assert_allclose(sampled, model.get_normalized_expression(adata, n_samples=20, return_numpy=True))
    with pytest.raises(sa.InputError, match="n_samples=0"):
        model.get_normalized_expression(adata, n_samples=0)


def test_posterior_predictive_sample_draws_counts(vae_sim):
    adata, model = vae_sim
    one = model.posterior_predictive_sample(adata)
    assert one.shape == adata.shape
    assert (one >= 0).all() and np.array_equal(one, np.round(one))
    many = model.posterior_predictive_sample(adata, n_samples=3, gene_list=list(adata.var_names[:10]))
    assert many.shape == (adata.n_obs, 10, 3)
    # zero inflation only removes counts: the draws' mean is below the model's expected counts
    expected = model.get_normalized_expression(adata, library_size="observed", n_samples=5, return_numpy=True)
    assert 0 < one.mean() < expected.mean()
    # seed= reproduces the draws whatever the global torch RNG did in between (the Gamma too)
    torch.manual_seed(123)
    again = model.posterior_predictive_sample(adata)
    assert np.array_equal(again, one)
    assert not np.array_equal(model.posterior_predictive_sample(adata, seed=1), one)


def test_posterior_predictive_draws_average_to_the_models_expected_counts(sim_session):
    adata = sim_session.copy()
    model = sa.tl.vae(adata, likelihood="poisson", **TINY_VAE)
    draws = model.posterior_predictive_sample(adata, n_samples=40)
    expected = model.get_normalized_expression(adata, library_size="observed", n_samples=40, return_numpy=True)
    np.testing.assert_allclose(draws.mean((0, 2)), expected.mean(0), rtol=0.1, atol=0.05)


def test_elbo_and_reconstruction_error(vae_sim):
    adata, model = vae_sim
    elbo = model.get_elbo(adata)
    reconstruction = model.get_reconstruction_error(adata)
    assert set(reconstruction) == {"reconstruction_loss"}
    assert 0 < reconstruction["reconstruction_loss"] < elbo  # the KL term is positive
    # the validation loss of the last epochs is the same quantity on a tenth of the cells
    assert abs(elbo - float(model.history["validation_loss"][-1])) < 0.5 * elbo


# ---------------------------------------------------------------- the command line

def test_cli_version_and_help_with_defaults(capsys):
    from scgen_ae.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"scgen-ae {sa.__version__}"
    assert main(["integrate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 2000)" in text and "(default: zinb)" in text and "(default: 10)" in text
    assert main(["demo", "--help"]) == 0
    text = capsys.readouterr().out
    assert "-o OUT, --output OUT" in text and "--out " not in text  # one output flag; the old one hidden


def test_cli_integrate_keeps_every_gene_and_marks_the_models(sim_session, tmp_path, capsys):
    from scgen_ae.cli import main

    src, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    sim_session.write_h5ad(src)
    assert main(["integrate", str(src), "--batch-key", "batch", "-o", str(out), "--n-top-genes", "60",
                 "--n-latent", "4", "--max-epochs", "2", "--threads", "1", "--quiet"]) == 0
    capsys.readouterr()
    result = ad_read(out)
    assert list(result.var_names) == list(sim_session.var_names)  # the full gene set, in its order
    marked = result.var["scgen_ae_model_gene"].to_numpy()
    assert marked.dtype == bool and marked.sum() == 60
    assert result.obsm["X_vae"].shape == (sim_session.n_obs, 4)


def test_cli_errors_name_flags_not_python_arguments(sim_session, tmp_path, capsys):
    from scgen_ae.cli import flag_form, main

    src = tmp_path / "in.h5ad"
    sim_session.write_h5ad(src)
    assert main(["integrate", str(src), "--batch-key", "batch", "--layer", "counts", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--layer counts is not in adata.layers" in err and "layer='counts'" not in err
    assert flag_form("Pass layer=None or n_latent=5.") == "Pass no --layer or --n-latent 5."


def ad_read(path):
    import anndata as ad

    return ad.read_h5ad(path)


# ---------------------------------------------------------------- mask_var

def test_mask_var_trains_on_the_highly_variable_genes_as_the_subset_would(sim_session):
    adata = sim_session.copy()
    adata.var["highly_variable"] = np.arange(adata.n_vars) % 3 == 0
    subset = adata[:, adata.var["highly_variable"]].copy()
    model = sa.tl.vae(adata, **TINY_VAE)  # the default: var["highly_variable"] when present
    on_subset = sa.tl.vae(subset, **TINY_VAE)
    assert model.var_names == list(subset.var_names)
    np.testing.assert_allclose(adata.obsm["X_vae"], subset.obsm["X_vae"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.get_latent(adata), on_subset.get_latent(subset), rtol=1e-5, atol=1e-5)
    assert adata.uns["vae"]["params"]["mask_var"] == "highly_variable"
    assert adata.n_vars == sim_session.n_vars  # nothing was subset


def test_mask_var_none_an_array_and_bad_masks(sim_session, snapshot):
    adata = sim_session.copy()
    adata.var["highly_variable"] = np.arange(adata.n_vars) < 40
    assert len(sa.tl.vae(adata.copy(), mask_var=None, **TINY_VAE).var_names) == adata.n_vars
    assert len(sa.tl.vae(adata.copy(), mask_var=np.arange(adata.n_vars) < 70, **TINY_VAE).var_names) == 70
    snap = snapshot(adata)
    for bad, message in (("nope", "not a column of adata.var"), (np.zeros(adata.n_vars, bool), "selects no gene"),
                         (np.ones(3, bool), "one boolean per gene")):
        with pytest.raises(sa.InputError, match=message):
            sa.tl.vae(adata, mask_var=bad, **TINY_VAE)
    snap.assert_unchanged(adata)
