"""Figures of integration scores (``tl.score_integration``) and the one-figure model report."""
from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData

from .._validate import InputError
from ._embedding import cached_embedding
from ._plots import _color_values, _scatter, draw_history, show_doc
from ._show import METHOD_NAMES, basis_name, finish, key_name

_AGGREGATES = ("Bio conservation", "Batch correction", "Total")


def scores_table(adata: AnnData, key: str = "integration_scores") -> pd.DataFrame:
    """The table ``tl.score_integration`` stored in ``uns[key]``, rebuilt as a DataFrame."""
    if key not in adata.uns:
        raise InputError(f"adata.uns has no {key!r}; run sa.tl.score_integration(adata, bases=..., batch_key=...) "
                         "first (or pass key= naming where it stored its results).")
    u = adata.uns[key]
    if not all(k in u for k in ("values", "index", "columns")):
        raise InputError(f"adata.uns[{key!r}] is not a score_integration result (it needs 'values', 'index', "
                         "'columns').")
    df = pd.DataFrame(np.asarray(u["values"], dtype=float), index=[str(i) for i in u["index"]],
                      columns=[str(c) for c in u["columns"]])
    df.index.name = "Embedding"
    return df


def _draw_table(ax, df: pd.DataFrame, highlight: str | None = None, title: str = "") -> None:
    """Scores as a coloured table: one row per embedding (best Total first), 0..1 colour scale."""
    df = df.sort_values("Total", ascending=False, na_position="last")
    values = df.to_numpy(dtype=float)
    ax.imshow(np.ma.masked_invalid(values), cmap="YlGnBu", vmin=0, vmax=1, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            val = values[i, j]
            text = "–" if not math.isfinite(val) else f"{val:.2f}"
            bold = df.columns[j] in _AGGREGATES
            ax.text(j, i, text, ha="center", va="center", fontsize=8, fontweight="bold" if bold else "normal",
                    color="white" if math.isfinite(val) and val > 0.65 else "black")
    ax.set_xticks(range(values.shape[1]), [c.replace(" ", "\n", 1) for c in df.columns], fontsize=8,
                  rotation=45, ha="right")
    ax.set_yticks(range(values.shape[0]), [f"▶ {b}" if b == highlight else b for b in df.index], fontsize=9)
    n_metrics = sum(c not in _AGGREGATES for c in df.columns)
    if 0 < n_metrics < values.shape[1]:  # a rule between the metrics and the aggregates
        ax.axvline(n_metrics - 0.5, color="black", lw=1.5)
    ax.set_title(title)


@show_doc
def scores(adata: AnnData, *, key: str = "integration_scores", metrics: bool = True,
           save=None, show: bool | None = None, return_fig: bool = False):
    """The results table of :func:`scgen_ae.tl.score_integration` as a figure.

    Parameters
    ----------
    adata
        AnnData holding ``uns[key]`` written by ``tl.score_integration``.
    key
        ``uns`` key of the scores.
    metrics
        Show every metric column; False shows only Bio conservation, Batch correction, Total.
    SHOW_PARAMS

    The figure: one row per embedding (best Total on top), one column per
    metric, cells coloured on a fixed 0..1 scale; ``–`` marks metrics not computed
    (e.g. bio conservation without labels, whose caveat is printed under the table).
    """
    df = scores_table(adata, key)
    if not metrics:
        df = df[[c for c in _AGGREGATES if c in df.columns]]
    note = str(adata.uns[key].get("note", ""))
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * df.shape[1], 1.4 + 0.45 * df.shape[0]))
    _draw_table(ax, df, title="Integration scores (scIB, Total = 0.6 Bio + 0.4 Batch)")
    if note:
        fig.text(0.01, -0.02, "Note: " + note, fontsize=7, wrap=True, va="top")
    fig.tight_layout()
    return finish(fig, [ax], name="scores", save=save, show=show, return_fig=return_fig)


@show_doc
def report(adata: AnnData, *, key: str = "vae", basis: str | None = None, color: str | Sequence[str] | None = None,
           scores_key: str = "integration_scores", method: str = "umap", recompute: bool = False, seed: int = 0,
           point_size: float | None = None, save=None, show: bool | None = None, return_fig: bool = False):
    """One figure for a trained model: loss curves, the 2-D embedding per ``color``, and the scores.

    Parameters
    ----------
    adata
        AnnData annotated by a ``tl`` model front (``uns[key]["history"]``, ``obsm[basis]``).
    key
        ``uns`` key of the model's parameters and history (``"vae"`` for ``tl.vae``).
    basis
        ``obsm`` key of the embedding; default ``uns[key]["key_added"]``.
    color
        ``obs`` columns or genes, one scatter panel each (e.g. ``["batch", "cell_type"]``).
    scores_key
        ``uns`` key of ``tl.score_integration``'s results; the panel is left out when it is
        absent, and the row of ``basis`` is marked with ▶.
    method, recompute, seed, point_size
        As in :func:`scgen_ae.pl.latent`; the 2-D coordinates are cached in
        ``obsm[f"{basis}_{method}"]`` (and ``uns["embeddings"]``), like ``pl.latent`` does.
    SHOW_PARAMS
    """
    if key not in adata.uns or "history" not in adata.uns[key]:
        raise InputError(f"adata.uns[{key!r}] has no training history; train a model first "
                         f"(e.g. sa.tl.vae(adata, batch_key=..., uns_key={key!r})) or pass key=.")
    basis = basis or str(adata.uns[key].get("key_added", ""))
    if basis not in adata.obsm:
        raise InputError(f"basis={basis!r} is not in adata.obsm (available: {list(adata.obsm.keys())}); pass basis=.")
    keys = [None] if color is None else [color] if isinstance(color, str) else list(color)
    values = [pd.Series(np.zeros(adata.n_obs), name="") if k is None else _color_values(adata, k) for k in keys]
    table = scores_table(adata, scores_key) if scores_key in adata.uns else None
    xy = cached_embedding(adata, basis, method, recompute, seed=seed)

    n_top = 1 + len(keys)
    height = 4.0 + (1.2 + 0.4 * len(table) if table is not None else 0.0)
    fig = plt.figure(figsize=(4.8 * n_top, height))
    grid = fig.add_gridspec(2 if table is not None else 1, n_top,
                            height_ratios=[4.0, 1.2 + 0.4 * len(table)] if table is not None else None)
    draw_history(fig.add_subplot(grid[0, 0]), adata.uns[key]["history"], key)
    size = point_size or max(2.0, 120000 / max(adata.n_obs, 1) ** 1.2)
    for i, (k, vals) in enumerate(zip(keys, values)):
        where = f"{basis_name(basis)} ({METHOD_NAMES.get(method, method)})"
        _scatter(fig.add_subplot(grid[0, 1 + i]), xy, vals, f"{key_name(k)}\n{where}" if k else where, size, adata,
                 method)
    if table is not None:
        _draw_table(fig.add_subplot(grid[1, :]), table, highlight=basis, title="Integration scores (scIB)")
    fig.tight_layout()
    return finish(fig, fig.axes, name="report", save=save, show=show, return_fig=return_fig)
