"""pl.latent (UMAP / t-SNE, cached in obsm) and pl.history."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

import scgen_ae as sa
from scgen_ae.pl import _embedding

from .conftest import fit_copy


@pytest.fixture
def annotated(trained_sim):
    return trained_sim[0].copy()


@pytest.fixture
def count_embeds(monkeypatch):
    """Count calls of embed_2d (the expensive step) while keeping its behaviour."""
    calls = []
    real = _embedding.embed_2d

    def counting(X, method, **kwargs):
        calls.append(method)
        return real(X, method, **kwargs)

    monkeypatch.setattr(_embedding, "embed_2d", counting)
    return calls


def _panels(fig):
    return [ax for ax in fig.axes if ax.axison]


@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_latent_figure_and_cache(annotated, method, count_embeds, tmp_path):
    if method == "tsne":
        annotated = annotated[:120].copy()  # t-SNE is the slow one on 2 cores
    fig = sa.pl.latent(annotated, return_fig=True, basis="X_vae", color=["batch", "cell_type"], method=method)
    assert isinstance(fig, Figure)
    assert len(_panels(fig)) == 2
    key = f"X_vae_{method}"
    assert annotated.obsm[key].shape == (annotated.n_obs, 2)
    assert np.isfinite(annotated.obsm[key]).all()
    assert key in annotated.uns["embeddings"]
    assert count_embeds == [method]
    first = annotated.obsm[key].copy()

    # the second call reuses the cached coordinates
    png = tmp_path / "latent.png"
    fig2 = sa.pl.latent(annotated, return_fig=True, basis="X_vae", color="batch", method=method, save=str(png))
    assert count_embeds == [method]
    assert len(_panels(fig2)) == 1
    np.testing.assert_array_equal(annotated.obsm[key], first)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    if method == "tsne":
        return
    # recompute=True, or a changed source embedding, computes it again
    sa.pl.latent(annotated, basis="X_vae", color="batch", method=method, recompute=True)
    assert count_embeds == [method, method]
    annotated.obsm["X_vae"] = annotated.obsm["X_vae"] * 2.0
    sa.pl.latent(annotated, basis="X_vae", color="batch", method=method)
    assert count_embeds == [method] * 3


def test_latent_panel_layout(annotated, count_embeds):
    annotated.obs["group2"] = annotated.obs["cell_type"].astype(str)
    annotated.obs["n_counts"] = np.asarray(annotated.X.sum(1)).ravel()
    colors = ["batch", "cell_type", "group2", "gene3"]
    fig = sa.pl.latent(annotated, return_fig=True, color=colors, method="umap", ncols=3)
    axes = fig.axes
    titled = [ax for ax in axes if ax.get_title()]
    # readable titles: the key in words over what is drawn (not "X_vae UMAP: cell_type")
    assert [ax.get_title().split("\n")[0] for ax in titled] == [c.replace("_", " ") for c in colors]
    assert all(ax.get_title().endswith("VAE latent space (UMAP)") for ax in titled)
    assert sum(not ax.axison for ax in axes) == 2  # 4 panels on a 2 x 3 grid: 2 blank
    sa.pl.latent(annotated, color=None, method="umap")
    sa.pl.latent(annotated, color="n_counts", method="umap")  # continuous obs column
    assert count_embeds == ["umap"]  # everything reused the one cached UMAP


def test_latent_cache_survives_h5ad(annotated, count_embeds, tmp_path):
    import anndata as ad

    sa.pl.latent(annotated, color="batch", method="umap")
    path = tmp_path / "a.h5ad"
    annotated.write_h5ad(path)
    back = ad.read_h5ad(path)
    sa.pl.latent(back, color="batch", method="umap")
    assert count_embeds == ["umap"]


def test_latent_other_basis(annotated, count_embeds):
    annotated.obsm["X_other"] = np.random.default_rng(0).normal(size=(annotated.n_obs, 5))
    fig = sa.pl.latent(annotated, return_fig=True, basis="X_other", color="batch", method="umap")
    assert "X_other_umap" in annotated.obsm and "X_vae_umap" not in annotated.obsm
    assert isinstance(fig, Figure)


def test_latent_errors(annotated):
    """(umap: cheap once numba has compiled it in the first test.)"""
    with pytest.raises(KeyError, match="X_nope"):
        sa.pl.latent(annotated, basis="X_nope", color="batch", method="umap")
    with pytest.raises(KeyError, match="not_a_column"):
        sa.pl.latent(annotated, color="not_a_column", method="umap")
    with pytest.raises(ValueError, match="method='pca'"):
        sa.pl.latent(annotated, color="batch", method="pca")


def test_history_from_adata_and_model(trained_sim, tmp_path):
    adata, model = trained_sim
    fig = sa.pl.history(adata, return_fig=True, key="vae")
    assert isinstance(fig, Figure)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "train" in labels and "validation" in labels
    png = tmp_path / "hist.png"
    fig2 = sa.pl.history(model, return_fig=True, save=png)
    assert isinstance(fig2, Figure)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_history_without_validation(sim_session):
    adata, _ = fit_copy(sa.tl.vae, sim_session, batch_key="batch", n_latent=4, n_hidden=32, max_epochs=2,
                         validation_fraction=0.0, n_threads=1, progress=False)
    fig = sa.pl.history(adata, return_fig=True)
    assert [line.get_label() for line in fig.axes[0].get_lines()][0] == "train"
