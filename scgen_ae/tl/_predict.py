"""Latent arithmetic on a trained VAE (scGen): perturbation prediction and batch removal.

Both move cells by vectors in the latent space and decode the result with the model's
own likelihood, so they work for every likelihood: expected counts for the count
likelihoods, log-normalised values for ``gaussian`` (scGen's MSE-on-log-data setting).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _validate as v
from ._common import params_record


# ------------------------------------------------------------------ helpers

def _check_model(model) -> None:
    from ..models.vae import VAE

    if not isinstance(model, VAE):
        raise v.InputError(f"model must be a trained sa.VAE (from sa.tl.vae), got {type(model).__name__}.")


def _obs_values(adata: AnnData, key: str, what: str) -> np.ndarray:
    if key not in adata.obs:
        cols = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
        raise v.InputError(f"{what}={key!r} is not a column of adata.obs (columns: {cols}).")
    col = adata.obs[key]
    if col.isna().any():
        raise v.InputError(f"adata.obs[{key!r}] has {int(col.isna().sum())} missing values; label or drop those cells.")
    return col.astype(str).to_numpy()


def _latents(model, adata: AnnData, layer, batch_key):
    """(validated CellData, posterior means (n_cells, n_latent)) of ``adata`` under ``model``."""
    data = model._cell_data(adata, layer, batch_key)
    return data, model.get_latent(adata, layer=layer, batch_key=batch_key)


def _balanced_mean(z: np.ndarray, groups: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Mean of ``n`` cells drawn with each group equally often (scGen's class balancing)."""
    uniq = np.unique(groups)
    per = int(np.ceil(n / len(uniq)))
    picks = np.concatenate([rng.choice(np.flatnonzero(groups == g), per, replace=True) for g in uniq])
    return z[rng.permutation(picks)[:n]].mean(0)


# ------------------------------------------------------------------ prediction

def predict(
    model,
    adata: AnnData,
    *,
    condition_key: str,
    ctrl: str,
    stim: str,
    cell_type_key: str | None = None,
    predict: str | None = None,
    balance: bool = True,
    layer="model",
    batch_key="model",
    seed: int = 0,
    uns_key: str = "predict",
) -> AnnData:
    """Predict the ``stim`` response of the ``ctrl`` cells of one cell type (scGen).

    delta = mean latent of ``stim`` cells - mean latent of ``ctrl`` cells, over the cell
    types seen in both conditions other than ``predict``; with ``balance`` every such
    type contributes equally (scGen's class-balanced resampling: each condition is
    resampled with replacement to the same number of cells per type, then both to
    the smaller size). The ``ctrl`` cells of ``predict`` are moved by delta and decoded.
    ``stim`` cells of ``predict`` in ``adata`` are never used (they are what is
    predicted); the model itself should have been trained without them.

    Without ``cell_type_key`` delta is the plain difference of the condition means and
    every ``ctrl`` cell is predicted.

    Parameters
    ----------
    model
        A :class:`~scgen_ae.VAE`, trained with ``batch_key=None`` or a technical batch
        (not the condition: a conditional model removes the condition from z).
    adata
        Cells x genes with the model's genes (matched by name), ``obs[condition_key]``
        and ``obs[cell_type_key]``.
    condition_key, ctrl, stim
        ``obs`` column of the condition and its control / stimulated values.
    cell_type_key, predict
        ``obs`` column of the cell types and the type to predict.
    balance
        Class-balanced sampling for delta (default True).
    layer, batch_key
        Default to those the model was trained with.
    seed
        Seed of the resampling.
    uns_key
        Key of the record in the returned object's ``uns``.

    Returns
    -------
    A new AnnData (n_ctrl_cells_of_type, n_model_genes): ``X`` the predicted expression
    (expected counts at each cell's observed library size for count likelihoods,
    log-normalised values for ``gaussian``), ``obs`` copied from the control cells with
    ``obs[condition_key] = "pred"``, ``obsm["X_vae"]`` the shifted latents, and
    ``uns[uns_key]``: ``params``, ``delta`` (n_latent,), ``scale`` ("counts" / "log"),
    ``cell_types_used`` and ``n_cells`` (ctrl / stim cells behind delta).
    ``adata`` is not modified.
    """
    _check_model(model)
    model_batch = model.batch_key if batch_key == "model" else batch_key
    if model_batch is not None and model_batch == condition_key:
        raise v.InputError(
            f"The model was trained with batch_key={condition_key!r}, the condition itself: its latent space has the "
            "condition removed, so there is no shift to learn. Train with batch_key=None (or a technical batch).")
    cond = _obs_values(adata, condition_key, "condition_key")
    for name, value in (("ctrl", ctrl), ("stim", stim)):
        if not (cond == str(value)).any():
            raise v.InputError(f"{name}={value!r} is not a value of adata.obs[{condition_key!r}] "
                               f"(values: {sorted(set(cond))[:10]}).")
    is_ctrl, is_stim = cond == str(ctrl), cond == str(stim)
    if cell_type_key is None:
        target_rows = is_ctrl
        used = np.ones(adata.n_obs, bool)
        types = np.zeros(adata.n_obs, dtype=object)
    else:
        types = _obs_values(adata, cell_type_key, "cell_type_key")
        if predict is None or not (is_ctrl & (types == str(predict))).any():
            raise v.InputError(f"predict={predict!r} must name a cell type of adata.obs[{cell_type_key!r}] with "
                               f"{ctrl!r} cells (types with {ctrl!r} cells: {sorted(set(types[is_ctrl]))[:10]}).")
        target_rows = is_ctrl & (types == str(predict))
        both = set(types[is_ctrl]) & set(types[is_stim]) - {str(predict)}
        if not both:
            raise v.InputError(f"No cell type other than {predict!r} has both {ctrl!r} and {stim!r} cells: the "
                               "stimulation shift cannot be learnt.")
        used = np.isin(types, sorted(both))
    data, z = _latents(model, adata, layer, batch_key)
    zc, zs = z[is_ctrl & used], z[is_stim & used]
    if balance and cell_type_key is not None:
        rng = np.random.default_rng(seed)
        n = min(len(zc), len(zs))
        delta = _balanced_mean(zs, types[is_stim & used], n, rng) - _balanced_mean(zc, types[is_ctrl & used], n, rng)
    else:
        delta = zs.mean(0) - zc.mean(0)
    rows = np.flatnonzero(target_rows)
    z_pred = z[rows] + delta
    expr = model._decode_latent(data, z_pred, rows)

    pred = AnnData(expr, obs=adata.obs.iloc[rows].copy(), var=pd.DataFrame(index=pd.Index(model.var_names)))
    pred.obs[condition_key] = pd.Categorical(["pred"] * len(rows))
    pred.obsm["X_vae"] = z_pred.astype(np.float32)
    pred.uns[uns_key] = {
        "params": params_record(condition_key=condition_key, ctrl=ctrl, stim=stim, cell_type_key=cell_type_key,
                                predict=predict, balance=balance, seed=seed,
                                layer=model.layer if layer == "model" else layer),
        "delta": delta.astype(np.float32),
        "scale": "counts" if model.module.likelihood.counts else "log",
        "cell_types_used": np.asarray(sorted(set(types[used])) if cell_type_key is not None else [], dtype=str),
        "n_cells": {"ctrl": int(len(zc)), "stim": int(len(zs))},
    }
    return pred


# ------------------------------------------------------------------ evaluation

def mean_expression(X, scale: str) -> np.ndarray:
    """Per-gene mean expression (n_genes,) on the scale scGen compares.

    ``scale="counts"``: log1p of the mean of counts per 10k (each cell divided by its row
    sum): for decoded expected counts and observed counts alike this is unbiased, unlike
    the mean of log1p values, which a mean can never match. ``scale="log"``: plain mean.
    """
    X = X.tocsr() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    if scale == "log":
        return np.asarray(X.mean(0), dtype=np.float64).ravel()
    lib = np.asarray(X.sum(1), dtype=np.float64).ravel()
    lib = np.where(lib > 0, lib, 1.0)
    per10k = sp.diags(1e4 / lib) @ X if sp.issparse(X) else X * (1e4 / lib)[:, None]
    return np.log1p(np.asarray(per10k.mean(0), dtype=np.float64).ravel())


def r_squared(observed: np.ndarray, predicted: np.ndarray) -> float:
    """Squared Pearson correlation of mean expressions (scGen's ``reg_mean_plot`` R^2)."""
    observed, predicted = np.asarray(observed, float), np.asarray(predicted, float)
    if len(observed) < 2 or observed.std() == 0 or predicted.std() == 0:
        return float("nan")
    return float(np.corrcoef(observed, predicted)[0, 1] ** 2)


def response_means(adata: AnnData, pred: AnnData, *, cell_type: str | None, cell_type_key: str | None,
                   uns_key: str = "predict") -> dict[str, np.ndarray]:
    """Mean expression per gene of the real ``ctrl`` and ``stim`` cells of ``cell_type`` and of ``pred``.

    Reads the condition, the layer and the scale from ``pred.uns[uns_key]``; genes are
    those of ``pred`` (matched by name in ``adata``).
    """
    if uns_key not in pred.uns or "params" not in pred.uns[uns_key]:
        raise v.InputError(f"pred.uns has no {uns_key!r} record: pass the AnnData returned by sa.tl.predict.")
    rec = pred.uns[uns_key]
    params = rec["params"]
    layer = None if params["layer"] in (None, "None") else params["layer"]
    cond = _obs_values(adata, params["condition_key"], "condition_key")
    keep = np.ones(adata.n_obs, bool)
    if cell_type is not None:
        keep = _obs_values(adata, cell_type_key, "cell_type_key") == str(cell_type)
    pos, _ = v.align_genes(adata, list(pred.var_names))
    X = v.aligned_matrix(v.get_matrix(adata, layer), pos)
    out = {}
    for name in ("ctrl", "stim"):
        rows = keep & (cond == str(params[name]))
        if not rows.any():
            raise v.InputError(f"adata has no {params[name]!r} cells of cell type {cell_type!r} to compare with.")
        out[name] = mean_expression(X[np.flatnonzero(rows)], rec["scale"])
    out["pred"] = mean_expression(pred.X, rec["scale"])
    return out
