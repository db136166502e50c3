"""Figures. Models know nothing of plotting; these read AnnData only."""
from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._validate import InputError, MissingKeyError
from ._embedding import cached_embedding, check_embedding
from ._show import METHOD_NAMES, basis_name, embedding_axes, finish, key_name

#: the parameters every figure takes, as scanpy's
SHOW_DOC = """save
        Write the figure: a path, or True for ``<sc.settings.figdir>/<function name>.png``.
    show
        None (default): show the figure (``plt.show()``) and return None, so Jupyter draws it
        once (also when ``save`` is given, as scanpy), unless ``sc.settings.autoshow`` is False. False:
        return the Axes (a list when there are several panels).
    return_fig
        Return the matplotlib Figure (and do not show it)."""


def show_doc(fn):
    """Put :data:`SHOW_DOC` where a docstring says ``SHOW_PARAMS``."""
    fn.__doc__ = fn.__doc__.replace("SHOW_PARAMS", SHOW_DOC)
    return fn


def _color_values(adata: AnnData, key: str):
    if key in adata.obs:
        return adata.obs[key]
    if key in adata.var_names:
        col = adata[:, key].X
        col = col.toarray().ravel() if sp.issparse(col) else np.asarray(col).ravel()
        return pd.Series(np.log1p(col), index=adata.obs_names, name=f"{key} (log1p counts)")
    genes = ", ".join(map(repr, adata.var_names[:5])) + (", ..." if adata.n_vars > 5 else "")
    raise MissingKeyError(f"color={key!r} is neither a column of adata.obs (columns: "
                          f"{list(map(str, adata.obs.columns[:20]))}) nor a gene in adata.var_names ({genes}).")


def _scatter(ax, xy, values, title, point_size, adata, method: str | None = None):
    ax.set_title(title)
    if method is not None:
        embedding_axes(ax, method)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object or values.dtype == bool:
        cats = pd.Categorical(values)
        colors = adata.uns.get(f"{values.name}_colors")
        if colors is None or len(colors) < len(cats.categories):
            cmap = plt.get_cmap("tab10" if len(cats.categories) <= 10 else "tab20")
            colors = [cmap(i % cmap.N) for i in range(len(cats.categories))]
        order = np.random.default_rng(0).permutation(len(xy))  # no batch drawn on top of another
        codes = cats.codes[order]
        ax.scatter(xy[order, 0], xy[order, 1], s=point_size, c=[colors[c] for c in codes], linewidths=0)
        handles = [plt.Line2D([], [], marker="o", ls="", color=colors[i], label=str(c))
                   for i, c in enumerate(cats.categories)]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False, fontsize=9,
                  title=key_name(values.name) or None, title_fontsize=9)
    else:
        sc = ax.scatter(xy[:, 0], xy[:, 1], s=point_size, c=np.asarray(values, float), cmap="viridis", linewidths=0)
        bar = plt.colorbar(sc, ax=ax, fraction=0.046)
        if values.name:
            bar.set_label(key_name(values.name))


@show_doc
def latent(adata: AnnData, *, basis: str = "X_vae", color: str | Sequence[str] | None = None,
           method: str = "umap", recompute: bool = False, seed: int = 0, n_neighbors: int = 15,
           min_dist: float = 0.3, perplexity: float = 30.0, ncols: int = 3, point_size: float | None = None,
           save=None, show: bool | None = None, return_fig: bool = False):
    """Scatter the 2-D UMAP / t-SNE of ``obsm[basis]``, one panel per ``color``.

    With ``method="umap"``, scanpy's ``obsm["X_umap"]`` is drawn when ``sc.tl.umap`` computed it
    on this basis (``sc.pp.neighbors(adata, use_rep=basis)``). Otherwise the 2-D coordinates are
    computed once with scanpy (``sc.pp.neighbors`` + ``sc.tl.umap`` on a private AnnData, so
    your neighbour graph is not replaced) or t-SNE, stored in ``obsm[f"{basis}_{method}"]``
    (parameters in ``uns["embeddings"]``; logged at ``sa.settings.verbosity >= 2``) and reused
    by later calls. ``color`` takes ``obs`` columns or gene names; every argument is checked
    before anything is computed.

    Parameters
    ----------
    SHOW_PARAMS
    """
    keys = [None] if color is None else [color] if isinstance(color, str) else list(color)
    # every argument is checked before the embedding is computed and cached
    check_embedding(adata, basis, method)
    values = [pd.Series(np.zeros(adata.n_obs), name="") if key is None else _color_values(adata, key) for key in keys]
    params = dict(n_neighbors=n_neighbors, min_dist=min_dist) if method == "umap" else dict(perplexity=perplexity)
    xy = cached_embedding(adata, basis, method, recompute, seed=seed, **params)
    ncols = min(ncols, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4.8 * nrows), squeeze=False)
    size = point_size or max(2.0, 120000 / max(adata.n_obs, 1) ** 1.2)
    where = f"{basis_name(basis)} ({METHOD_NAMES[method]})"
    for ax, key, vals in zip(axes.flat, keys, values):
        _scatter(ax, xy, vals, f"{key_name(key)}\n{where}" if key else where, size, adata, method)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return finish(fig, fig.axes, name="latent", save=save, show=show, return_fig=return_fig)


def draw_history(ax, hist, key: str) -> None:
    """Training / validation loss per epoch of a ``history`` dict onto ``ax``. An NMF history
    with a sketch phase (``sketch_loss`` after the first ``sketch_at`` passes) is drawn in
    the order the passes ran, the passes over the sketch dashed."""
    train = np.asarray(hist["train_loss"])
    val = np.asarray(hist["validation_loss"])
    sketch = np.asarray(hist.get("sketch_loss", []), dtype=np.float64)
    at = int(hist.get("sketch_at", 0))
    by_pass = "sketch_loss" in hist  # an NMF history: passes over the data, not epochs
    epochs = np.arange(1, len(train) + 1) + np.where(np.arange(len(train)) >= at, len(sketch), 0)
    if len(sketch):
        ax.plot(epochs[:at], train[:at], color="C0", label="train")
        ax.plot(at + 1 + np.arange(len(sketch)), sketch, color="C0", ls="--", label="over the sketch (estimate)")
        ax.plot(epochs[at:], train[at:], color="C0")
    else:
        ax.plot(epochs, train, label="train")
    if len(val):
        ax.plot(epochs[: len(val)], val, label="validation")
    best = int(hist.get("best_epoch", -1))
    if best >= 0:
        ax.axvline(epochs[best] if best < len(epochs) else best + 1, color="grey", ls=":",
                   label="last pass" if by_pass else f"best epoch {best + 1}")
    tail = np.concatenate([train[len(train) // 5:], val[len(val) // 5:], sketch[len(sketch) // 5:]]) \
        if len(train) > 5 else train
    if len(tail):
        lo, hi = np.nanmin(tail), np.nanmax(tail)
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.3 * (hi - lo + 1e-9))
    ax.set_xlabel("pass" if by_pass else "epoch")
    ax.set_ylabel(hist.get("loss_label", "loss per cell (negative ELBO)"))
    ax.set_title(f"Training curves ({key})")
    ax.legend(frameon=False)


#: history keys of whole losses: the rest under these prefixes are per-term means
_TOTALS = ("train_loss", "validation_loss")


def history_terms(hist, terms) -> list[str]:
    """The loss terms to draw from ``hist``: ``terms=True`` all it recorded, else the names
    given (a string or a list of them); InputError for a name it did not record."""
    recorded = list(dict.fromkeys(k.split("_", 1)[1] for k in hist
                                  if k.startswith(("train_", "validation_")) and k not in _TOTALS))
    if not recorded:
        raise InputError("This history records no loss terms (models trained with an earlier version, and NMF, "
                         "keep totals only); draw it with terms=False, or train the model again.")
    wanted = recorded if terms is True else [terms] if isinstance(terms, str) else list(terms)
    unknown = [t for t in wanted if t not in recorded]
    if unknown or not wanted:
        raise InputError(f"terms={terms!r} names no recorded loss term{f' {unknown}' if unknown else ''}; "
                         f"this history has {recorded} (or pass terms=True for all of them).")
    return wanted


def draw_terms(ax, hist, terms: list[str], key: str) -> None:
    """Each loss term's per-epoch mean onto ``ax``: training solid, validation dashed."""
    for i, term in enumerate(terms):
        for prefix, style in (("train", "-"), ("validation", "--")):
            values = np.asarray(hist.get(f"{prefix}_{term}", []), dtype=np.float64)
            if len(values):
                ax.plot(np.arange(1, len(values) + 1), values, color=f"C{i % 10}", ls=style,
                        label=f"{term} ({prefix})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean per cell")
    ax.set_title(f"Loss terms ({key})")
    ax.legend(frameon=False)


@show_doc
def history(adata_or_model, *, key: str = "vae", terms: bool | str | Sequence[str] = False, save=None,
            show: bool | None = None, return_fig: bool = False):
    """Training and validation loss per epoch from ``uns[key]["history"]`` (or a model).

    Parameters
    ----------
    key
        The ``uns`` record of the model (an AnnData given).
    terms
        Also draw the loss's terms in a second panel: True for every term the history
        recorded (``reconstruction``, ``kl``, penalties such as ``alignment``), or the names
        of some (e.g. ``["reconstruction", "kl"]``). The KL is drawn before its weights
        (``beta``, the warm-up's ``kl_weight``); penalties as added to the loss.
    SHOW_PARAMS
    """
    if isinstance(adata_or_model, AnnData):
        record = adata_or_model.uns.get(key)
        if not isinstance(record, dict) or "history" not in record:
            trained = [k for k, val in adata_or_model.uns.items() if isinstance(val, dict) and "history" in val]
            raise MissingKeyError(f"adata.uns[{key!r}] holds no training history; pass key= naming one that does "
                                  f"(uns keys with a history: {trained or 'none: train a model first'}).")
        hist = record["history"]
    else:
        hist = adata_or_model.history
    chosen = [] if terms is False or terms is None else history_terms(hist, terms)
    fig, axes = plt.subplots(1, 2 if chosen else 1, figsize=(12.4 if chosen else 6.4, 4.4), squeeze=False)
    draw_history(axes[0, 0], hist, key)
    if chosen:
        draw_terms(axes[0, 1], hist, chosen, key)
    fig.tight_layout()
    return finish(fig, list(axes.flat), name="history", save=save, show=show, return_fig=return_fig)
