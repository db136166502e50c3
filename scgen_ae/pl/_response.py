"""Mean-expression regression plot of a predicted perturbation response (scGen's reg_mean_plot)."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from anndata import AnnData

from ..tl._predict import r_squared, response_means
from ._plots import show_doc
from ._show import finish


@show_doc
def response(adata: AnnData, pred: AnnData, *, condition_key: str | None = None, cell_type: str | None = None,
             cell_type_key: str | None = None, genes: Sequence[str] | None = None, n_labels: int = 10,
             uns_key: str = "predict", save=None, show: bool | None = None, return_fig: bool = False):
    """Predicted vs observed mean expression per gene, with R^2 over all genes and ``genes``.

    Compares ``pred`` (from :func:`scgen_ae.tl.predict`) with the real stimulated cells
    of ``cell_type`` in ``adata``: x = observed mean, y = predicted mean, one point per
    gene, on the scale of :func:`scgen_ae.tl.mean_expression` (log1p of mean counts per
    10k for count models, mean log value for gaussian). R^2 is the squared Pearson
    correlation (scGen's convention). ``genes`` (e.g. the top DE genes) are drawn in
    red, get their own R^2, and the first ``n_labels`` are labelled. The condition,
    control/stim values, layer and cell-type column are read from ``pred.uns[uns_key]``;
    ``condition_key`` / ``cell_type_key``, when given, must agree with them.
    Sets nothing.

    Parameters
    ----------
    SHOW_PARAMS
    """
    params = pred.uns.get(uns_key, {}).get("params", {})
    for name, given in (("condition_key", condition_key), ("cell_type_key", cell_type_key)):
        if given is not None and params and str(params.get(name)) != str(given):
            from .._validate import InputError

            raise InputError(f"{name}={given!r} but the prediction was made with {name}={params.get(name)!r}.")
    ct_key = cell_type_key or (None if params.get("cell_type_key") in (None, "None") else params.get("cell_type_key"))
    cell_type = cell_type if cell_type is not None else params.get("predict")
    means = response_means(adata, pred, cell_type=cell_type if ct_key else None, cell_type_key=ct_key,
                           uns_key=uns_key)
    obs, prd = means["stim"], means["pred"]
    names = np.asarray(pred.var_names, dtype=str)
    sel = np.isin(names, list(genes)) if genes is not None else np.zeros(len(names), bool)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(obs, prd, s=6, c="0.6", linewidths=0, label=f"all genes: R² = {r_squared(obs, prd):.3f}")
    if sel.any():
        ax.scatter(obs[sel], prd[sel], s=12, c="tab:red", linewidths=0,
                   label=f"{int(sel.sum())} selected genes: R² = {r_squared(obs[sel], prd[sel]):.3f}")
        for g in [g for g in genes if g in set(names[sel])][:n_labels]:
            j = int(np.flatnonzero(names == g)[0])
            ax.annotate(g, (obs[j], prd[j]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    lo, hi = float(min(obs.min(), prd.min())), float(max(obs.max(), prd.max()))
    ax.plot([lo, hi], [lo, hi], ls=":", c="k", lw=0.8)
    scale = pred.uns[uns_key]["scale"]
    unit = "log1p(mean counts per 10k)" if scale == "counts" else "mean log expression"
    ax.set_xlabel(f"observed {params.get('stim', 'stim')}: {unit}")
    ax.set_ylabel(f"predicted: {unit}")
    ax.set_title(f"{cell_type or 'all cells'}: predicted vs observed response")
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    fig.tight_layout()
    return finish(fig, [ax], name="response", save=save, show=show, return_fig=return_fig)
