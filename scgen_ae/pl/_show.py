"""scanpy's ``show`` / ``save`` / ``return_fig`` semantics and readable labels, for every ``sa.pl`` figure."""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt

from .._settings import logger

#: what an ``obsm`` key holds, in words, for titles
_BASIS_NAMES = {"X_vae": "VAE latent space", "X_dae": "DAE bottleneck", "X_lda": "LDA topics",
                "X_nmf": "NMF factors", "X_pca": "PCA", "X_umap": "UMAP", "X_vae_corrected": "VAE latent, corrected",
                "X_pca_uncorrected": "PCA, uncorrected"}
METHOD_NAMES = {"umap": "UMAP", "tsne": "t-SNE"}


def basis_name(basis: str) -> str:
    """``"X_vae"`` -> ``"VAE latent space"``; other keys lose the ``X_`` prefix."""
    if basis in _BASIS_NAMES:
        return _BASIS_NAMES[basis]
    return basis[2:].replace("_", " ") if basis.startswith("X_") else basis.replace("_", " ")


def key_name(key: str | None) -> str:
    """An ``obs`` column or gene as a title: ``"cell_type"`` -> ``"cell type"``."""
    return "" if key is None else str(key).replace("_", " ")


def embedding_axes(ax, method: str) -> None:
    """Axis labels as scanpy's: ``UMAP1`` / ``UMAP2``; ticks off (the units mean nothing)."""
    label = {"umap": "UMAP", "tsne": "tSNE"}.get(method, method)
    ax.set_xlabel(f"{label}1")
    ax.set_ylabel(f"{label}2")
    ax.set_xticks([])
    ax.set_yticks([])


def _autoshow() -> bool:
    scanpy = sys.modules.get("scanpy")
    return bool(getattr(getattr(scanpy, "settings", None), "autoshow", True)) if scanpy is not None else True


def _save_path(save, name: str) -> Path:
    """``save=True``: ``<sc.settings.figdir>/<name>.png``, as scanpy; a string or path: that file."""
    if save is True:
        scanpy = sys.modules.get("scanpy")
        figdir = Path(getattr(getattr(scanpy, "settings", None), "figdir", "figures")) if scanpy else Path("figures")
        figdir.mkdir(parents=True, exist_ok=True)
        return figdir / f"{name}.png"
    return Path(save)


def finish(fig, axes, *, name: str, save=None, show: bool | None = None, return_fig: bool = False):
    """End a figure as scanpy does.

    ``return_fig=True``: the Figure. Otherwise ``show`` (None: scanpy's ``autoshow``, True, with or
    without ``save``, as scanpy) calls ``plt.show()`` and returns None, so that Jupyter draws the
    figure once; ``show=False`` returns the Axes (a list when there are several panels).
    """
    if save:
        path = _save_path(save, name)
        fig.savefig(path, dpi=150, bbox_inches="tight")
        logger.info("saved the figure to %s", path)
    if return_fig:
        return fig
    if show is None:
        # not "unless save": the Axes returned would print as a list under the figure in Jupyter
        show = _autoshow()
    if show:
        plt.show()
        return None
    axes = [ax for ax in axes if ax.axison]
    return axes[0] if len(axes) == 1 else axes
