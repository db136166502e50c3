"""Raw vs denoised expression of a few genes, per batch. Reads AnnData only."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate as v
from ._plots import show_doc
from ._show import finish, key_name


def _denoised_columns(adata: AnnData, denoised: str, genes: list[str]) -> np.ndarray:
    """(n_cells, len(genes)) from ``layers[denoised]`` or the ``obsm`` frame ``genes=`` writes."""
    if denoised in adata.layers:
        pos = adata.var_names.get_indexer(genes)
        M = adata.layers[denoised]
        return np.asarray(M[:, pos].toarray() if hasattr(M, "toarray") else M[:, pos], dtype=float)
    if denoised in adata.obsm and isinstance(adata.obsm[denoised], pd.DataFrame):
        frame = adata.obsm[denoised]
        absent = [g for g in genes if g not in frame.columns]
        if absent:
            raise v.InputError(f"obsm[{denoised!r}] holds no denoised values for {absent}; rerun "
                               f"sa.tl.denoise with genes= including them.")
        return frame[genes].to_numpy(dtype=float)
    raise v.InputError(f"No denoised values in layers[{denoised!r}] or obsm[{denoised!r}]; run "
                       "sa.tl.denoise(adata) first (or pass denoised= naming its layer_added).")


@show_doc
def denoising(adata: AnnData, *, genes: Sequence[str], layer: str | None = None, denoised: str = "denoised",
              batch_key: str | None = "batch", log: bool = True, save=None, show: bool | None = None,
              return_fig: bool = False):
    """Raw counts (``X`` / ``layers[layer]``) vs denoised values, one row per gene.

    Left: distribution of the raw counts per batch; middle: the same for the denoised
    values; right: denoised vs raw for every cell, coloured by batch. Values are shown
    as log1p when ``log``.

    Parameters
    ----------
    SHOW_PARAMS
    """
    genes = [str(g) for g in ([genes] if isinstance(genes, str) else genes)]
    missing = [g for g in genes if g not in set(adata.var_names)]
    if missing or not genes:
        raise v.InputError(f"genes= must name genes of adata.var_names; not found: {missing[:5]}.")
    raw_all = v.get_matrix(adata, layer)
    raw = raw_all[:, adata.var_names.get_indexer(genes)].toarray().astype(float)
    den = _denoised_columns(adata, denoised, genes)
    if batch_key is not None and batch_key not in adata.obs:
        raise v.InputError(f"batch_key={batch_key!r} is not a column of adata.obs; pass batch_key=None.")
    batches = (adata.obs[batch_key].astype(str).to_numpy() if batch_key is not None
               else np.full(adata.n_obs, "all cells"))
    names = list(pd.unique(batches))
    tf = np.log1p if log else (lambda a: a)
    label = "log1p " if log else ""
    fig, axes = plt.subplots(len(genes), 3, figsize=(14, 3.8 * len(genes)), squeeze=False)
    colors = plt.get_cmap("tab10")
    for row, gene in enumerate(genes):
        r, d = tf(raw[:, row]), tf(den[:, row])
        for ax, values, kind in ((axes[row, 0], r, "raw"), (axes[row, 1], d, denoised)):
            ax.violinplot([values[batches == b] for b in names], showmedians=True)
            ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{gene}: {kind} per {key_name(batch_key) if batch_key else 'cell'}")
            ax.set_ylabel(f"{label}{kind}")
        ax = axes[row, 2]
        for i, b in enumerate(names):
            sel = batches == b
            ax.scatter(r[sel], d[sel], s=4, color=colors(i % 10), label=b, linewidths=0)
        ax.set_xlabel(f"{label}raw")
        ax.set_ylabel(f"{label}{denoised}")
        ax.set_title(f"{gene}: {denoised} vs raw, per cell")
        if row == 0:
            ax.legend(frameon=False, fontsize=8, markerscale=3, title=key_name(batch_key) or None)
    fig.tight_layout()
    return finish(fig, fig.axes, name="denoising", save=save, show=show, return_fig=return_fig)
