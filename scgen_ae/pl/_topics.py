"""Top genes per topic / factor, from any model that records its gene loadings in
``varm`` and names them in ``uns[key]["varm_key"]`` (tl.lda, tl.nmf)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData

from .._validate import MissingKeyError
from ._plots import show_doc
from ._show import finish


def _loadings(adata: AnnData, key: str) -> np.ndarray:
    record = adata.uns.get(key)
    if not isinstance(record, dict) or "varm_key" not in record:
        fronts = [k for k, val in adata.uns.items() if isinstance(val, dict) and "varm_key" in val]
        raise MissingKeyError(f"adata.uns[{key!r}] holds no 'varm_key': run sa.tl.lda / sa.tl.nmf first "
                       f"(uns keys with gene loadings: {fronts or 'none'}).")
    varm_key = str(record["varm_key"])
    if varm_key not in adata.varm:
        raise MissingKeyError(f"adata.uns[{key!r}]['varm_key'] is {varm_key!r}, which is not in adata.varm "
                       f"(available: {list(adata.varm.keys())}). Was the AnnData subset to other genes?")
    return np.asarray(adata.varm[varm_key], dtype=np.float64)


def top_genes(adata: AnnData, *, key: str = "lda", n_genes: int = 10) -> pd.DataFrame:
    """Table ``(n_genes, n_topics)`` of the genes with the largest loading in each topic /
    factor (columns "topic 0", ...), read from ``varm[uns[key]["varm_key"]]``."""
    loadings = _loadings(adata, key)
    order = np.argsort(-loadings, axis=0, kind="stable")[:n_genes]
    names = np.asarray(adata.var_names)
    return pd.DataFrame({f"topic {j}": names[order[:, j]] for j in range(loadings.shape[1])})


@show_doc
def topics(adata: AnnData, *, key: str = "lda", n_genes: int = 10, topics: Sequence[int] | None = None,
           ncols: int = 4, save=None, show: bool | None = None, return_fig: bool = False):
    """Bar charts of the ``n_genes`` genes with the largest loading in each topic / factor.

    Reads ``adata.varm[adata.uns[key]["varm_key"]]`` (n_genes x n_components): works for
    ``sa.tl.lda`` (``key="lda"``) and ``sa.tl.nmf`` (``key="nmf"``) alike. ``topics``
    picks components (default: all). Each gene name gets a row tall enough for its label.

    Parameters
    ----------
    SHOW_PARAMS
    """
    loadings = _loadings(adata, key)
    chosen = list(range(loadings.shape[1])) if topics is None else [int(t) for t in topics]
    bad = [t for t in chosen if not 0 <= t < loadings.shape[1]]
    if bad or not chosen:
        raise ValueError(f"topics={topics!r}: choose among 0..{loadings.shape[1] - 1}.")
    n_genes = max(1, min(int(n_genes), loadings.shape[0]))
    ncols = max(1, min(ncols, len(chosen)))
    nrows = math.ceil(len(chosen) / ncols)
    # one gene-name row is 0.2 inch (a 9-point label and its gap): rows never overlap
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 0.2 * n_genes * nrows + 1.3 * nrows),
                             squeeze=False)
    what = "topic" if key == "lda" or "lda" in key else "factor"
    
    names = np.asarray(adata.var_names)
    for ax, t in zip(axes.flat, chosen):
        order = np.argsort(-loadings[:, t], kind="stable")[:n_genes]
        ax.barh(np.arange(n_genes)[::-1], loadings[order, t], color="tab:blue")
        ax.set_yticks(np.arange(n_genes)[::-1], names[order], fontsize=8)
        ax.set_ylim(-0.6, n_genes - 0.4)
        ax.set_title(f"{what} {t}", fontsize=10)
        ax.set_xlabel("loading", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.xaxis.set_major_locator(plt.MaxNLocator(3))  # few x ticks: their labels never collide
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    fig.suptitle(f"Top genes per {what} ({key})", fontsize=11)
    fig.tight_layout()
    return finish(fig, fig.axes, name="topics", save=save, show=show, return_fig=return_fig)
