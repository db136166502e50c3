"""Cell usage of chosen factors (NMF, topics, any non-negative ``obsm`` basis) on a 2-D layout."""
from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate as v
from ._embedding import cached_embedding
from ._plots import _scatter, show_doc
from ._show import METHOD_NAMES, basis_name, finish


def _components(adata: AnnData, basis: str, components: int | Sequence[int] | None) -> tuple[np.ndarray, list[int]]:
    if basis not in adata.obsm:
        raise v.InputError(f"basis={basis!r} is not in adata.obsm (available: {list(adata.obsm.keys())}); "
                           "run e.g. sa.tl.nmf(adata) first, or pass the obsm key of the factors.")
    Z = np.asarray(adata.obsm[basis])
    k = Z.shape[1]
    chosen = list(range(min(k, 3))) if components is None else [components] if np.isscalar(components) else list(components)
    bad = [c for c in chosen if not isinstance(c, (int, np.integer)) or not 0 <= int(c) < k]
    if bad or not chosen:
        raise v.InputError(f"components={components!r}: obsm[{basis!r}] has {k} factors, so pass indices "
                           f"0..{k - 1} (e.g. components=[0, 1, 2]).")
    return Z, [int(c) for c in chosen]


@show_doc
def loadings(adata: AnnData, *, basis: str = "X_nmf", components: int | Sequence[int] | None = None,
             layout: str | None = None, method: str = "umap", recompute: bool = False, seed: int = 0,
             ncols: int = 3, point_size: float | None = None, save=None, show: bool | None = None,
             return_fig: bool = False):
    """Scatter how much each cell uses the chosen factors of ``obsm[basis]``, one panel per factor.

    Parameters
    ----------
    adata
        With the cell factors ``obsm[basis]`` (n_cells, k), e.g. from :func:`scgen_ae.tl.nmf`.
    basis
        ``obsm`` key of the factors.
    components
        Factor indices (0-based) to show; None: the first three.
    layout
        ``obsm`` key that places the cells; None: ``basis`` itself. A 2-column layout (e.g.
        scanpy's ``"X_umap"``) is drawn as it is; otherwise its 2-D ``method`` embedding is
        computed and cached as in :func:`scgen_ae.pl.latent` (``obsm[f"{layout}_{method}"]``).
    method, recompute, seed, ncols, point_size
        As in :func:`scgen_ae.pl.latent`.
    SHOW_PARAMS

    Notes
    -----
    Errors (unknown basis, out-of-range components) are
    :class:`scgen_ae.InputError` and leave ``adata`` unchanged.
    """
    Z, chosen = _components(adata, basis, components)
    layout = basis if layout is None else layout
    if layout not in adata.obsm:
        raise v.InputError(f"layout={layout!r} is not in adata.obsm (available: {list(adata.obsm.keys())}).")
    # a 2-D layout (e.g. scanpy's obsm["X_umap"]) is drawn as it is
    two_d = np.asarray(adata.obsm[layout]).shape[1] == 2
    xy = np.asarray(adata.obsm[layout]) if two_d else cached_embedding(adata, layout, method, recompute, seed=seed)
    where = basis_name(layout) if two_d else f"{basis_name(layout)} ({METHOD_NAMES.get(method, method)})"
    ncols = min(ncols, len(chosen))
    nrows = math.ceil(len(chosen) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4.8 * nrows), squeeze=False)
    size = point_size or max(2.0, 120000 / max(adata.n_obs, 1) ** 1.2)
    for ax, j in zip(axes.flat, chosen):
        values = pd.Series(Z[:, j], index=adata.obs_names, name=f"factor {j} usage")
        _scatter(ax, xy, values, f"{basis_name(basis)}: factor {j}\non {where}", size, adata,
                 "umap" if layout == "X_umap" or method == "umap" else "tsne")
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    fig.tight_layout()
    return finish(fig, fig.axes, name="loadings", save=save, show=show, return_fig=return_fig)
