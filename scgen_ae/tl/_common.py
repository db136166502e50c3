"""What every ``tl`` front shares: validation of the training data and writing results
in one step at the end, so a failure anywhere leaves the caller's AnnData untouched."""
from __future__ import annotations

import dataclasses
import warnings
import weakref

import numpy as np
from anndata import AnnData

from .. import _validate as v
from .. import ondisk
from ..data import CellData
from ..likelihoods import models_counts
from ..train import TrainConfig, train_config

TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def training_data(adata: AnnData, layer: str | None, batch_key: str | None, likelihood: str | None, *,
                  needs: str | None = None, otherwise: str | None = v.GAUSSIAN_ADVICE,
                  allow_single_batch: bool = False):
    """Validate ``adata`` for training; return (CellData, batch categories).

    When ``X`` is a CSR or dense matrix on disk (a backed AnnData, however opened) the data
    source is an :class:`~scgen_ae.ondisk.OnDiskCellData` that streams it instead; a
    ``layer`` is in memory even then (anndata's backed mode reads layers whole).
    ``needs`` / ``otherwise`` word the error for data that are not counts
    (see :func:`scgen_ae._validate.check_counts`); ``allow_single_batch``: a ``batch_key`` with
    one category is accepted (see :func:`scgen_ae._validate.batch_codes`).
    """
    if isinstance(adata, AnnData):
        v.check_unique_genes(adata)
    if ondisk.is_on_disk(adata, layer):
        return ondisk.training_data(adata, layer, batch_key, likelihood, needs=needs, otherwise=otherwise,
                                    allow_single_batch=allow_single_batch)
    X = v.get_matrix(adata, layer)
    counts = models_counts(likelihood)
    if counts:
        v.check_counts(X, layer, likelihood or "counts", needs=needs, otherwise=otherwise)
    v.check_not_empty(X, layer)
    codes, cats = v.batch_codes(adata, batch_key, allow_single=allow_single_batch)
    return CellData(X, codes, np.asarray(X.sum(1)).ravel(), log1p_input=counts), cats


def split_kwargs(kwargs: dict) -> tuple[TrainConfig, dict]:
    """Separate training options (:class:`TrainConfig` fields) from the rest; ``seed`` and
    ``device`` not given come from ``sa.settings``."""
    train = {k: kwargs.pop(k) for k in list(kwargs) if k in TRAIN_FIELDS}
    return train_config(**train), kwargs


def _uns_safe(value):
    """Make a parameter value storable in ``.uns`` / ``.h5ad``."""
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return [str(x) for x in value]
    return value


_NOTHING = object()


def write_results(adata: AnnData, *, X=_NOTHING, obs=None, obsm=None, layers=None, varm=None, uns=None) -> None:
    """Assign all outputs at once, after everything that can fail has run.

    The shapes are checked before the first assignment, so a result that does not fit
    ``adata`` raises :class:`~scgen_ae.InputError` with ``adata`` untouched. Replacing a
    key that is already there is announced with a ``UserWarning`` naming it. ``X`` replaces
    ``adata.X`` when given.
    """
    n_obs, n_vars = adata.shape
    stores = (("obs", adata.obs, obs, (n_obs,)), ("obsm", adata.obsm, obsm, (n_obs,)),
              ("layers", adata.layers, layers, (n_obs, n_vars)), ("varm", adata.varm, varm, (n_vars,)),
              ("uns", adata.uns, uns, None))
    for name, _, items, shape in stores:
        for key, value in (items or {}).items():
            got = tuple(np.shape(value))[: len(shape)] if shape is not None else None
            if shape is not None and got != shape:
                raise v.InputError(
                    f"The result for adata.{name}[{key!r}] has shape {np.shape(value)}, but adata has "
                    f"{n_obs} cells x {n_vars} genes (expected {shape} first): nothing was written."
                )
    if X is not _NOTHING and tuple(np.shape(X)) != (n_obs, n_vars):
        raise v.InputError(f"The result for adata.X has shape {np.shape(X)}, but adata is {n_obs} x {n_vars}: "
                           "nothing was written.")
    replaced = [f"adata.{name}[{key!r}]" for name, store, items, _ in stores for key in items or {} if key in store]
    if replaced:
        warnings.warn(f"Replacing {', '.join(replaced)}, which already existed, with this result; pass other keys "
                      "(key_added= / uns_key= / layer_added=) to keep both.", UserWarning, stacklevel=3)
    if X is not _NOTHING:
        adata.X = X
    for _, store, items, _ in stores:
        for key, value in (items or {}).items():
            store[key] = value


def params_record(**params) -> dict:
    return {k: _uns_safe(val) for k, val in params.items()}


# trained models by the AnnData they annotated: id(adata) -> {uns_key: model}. Entries go
# with their AnnData (weakref.finalize), so nothing is kept alive and ids are not reused stale.
_MODELS: dict[int, dict[str, object]] = {}


def keep_model(adata: AnnData, uns_key: str, model) -> None:
    """Remember ``model`` as the one that wrote ``adata.uns[uns_key]`` (see :func:`get_model`)."""
    key = id(adata)
    if key not in _MODELS:
        weakref.finalize(adata, _MODELS.pop, key, None)
    _MODELS.setdefault(key, {})[uns_key] = model


def returned(target: AnnData, model, *, copy: bool, uns_key: str):
    """The one return rule of the training fronts: the annotated copy with ``copy=True`` (as
    scanpy), else the model; either way the model is kept for :func:`get_model`."""
    keep_model(target, uns_key, model)
    return target if copy else model


def get_model(adata: AnnData, uns_key: str = "vae"):
    """The model a training front fitted into ``adata`` in this session.

    For ``copy=True``, which returns the annotated AnnData as scanpy does::

        adata2 = sa.tl.vae(adata, copy=True)
        model = sa.tl.get_model(adata2)               # uns_key="vae" (tl.vae's default)
        topics = sa.tl.get_model(adata2, "lda")      # tl.lda's default uns_key

    ``uns_key`` is the front's ``uns_key`` (``"vae"``, ``"denoise"``, ``"nmf"``, ``"lda"``,
    ``"map_query"``). Models live in memory only: after reading an ``.h5ad`` file, load the
    model saved with ``model.save(path)`` (``sa.VAE.load(path)``).
    """
    models = _MODELS.get(id(adata), {})
    if uns_key not in models:
        known = sorted(models) or "none"
        raise v.MissingKeyError(
            f"No model was trained into this AnnData under uns_key={uns_key!r} in this session (models here: "
            f"{known}). Models are kept in memory only: train one (e.g. sa.tl.vae(adata)), or load a saved one "
            "with sa.VAE.load(path)."
        )
    return models[uns_key]


class _HighlyVariableIfPresent:
    """The default of ``mask_var``: ``var["highly_variable"]`` when present, as scanpy's PCA."""

    def __repr__(self) -> str:
        return "'highly_variable' if present"


HVG_IF_PRESENT = _HighlyVariableIfPresent()


def var_mask(adata: AnnData, mask_var) -> np.ndarray | None:
    """The genes to train on as a boolean mask, or None for every gene.

    ``mask_var``: a ``var`` column of booleans, a boolean array (n_genes), None (every gene),
    or :data:`HVG_IF_PRESENT`. A mask that keeps every gene is returned as None.
    """
    if mask_var is HVG_IF_PRESENT:
        mask_var = "highly_variable" if "highly_variable" in adata.var else None
    if mask_var is None:
        return None
    if isinstance(mask_var, str):
        if mask_var not in adata.var:
            raise v.InputError(f"mask_var={mask_var!r} is not a column of adata.var (columns: "
                               f"{list(map(str, adata.var.columns[:20]))}); pass a var column of booleans, a "
                               "boolean array, or None for every gene.")
        mask = adata.var[mask_var].to_numpy()
    else:
        mask = np.asarray(mask_var)
    if mask.dtype != bool or mask.shape != (adata.n_vars,):
        raise v.InputError(f"mask_var must give one boolean per gene ({adata.n_vars}), got dtype {mask.dtype} "
                           f"and shape {mask.shape}.")
    if not mask.any():
        raise v.InputError("mask_var selects no gene; pass a mask with at least one True, or None for every gene.")
    return None if mask.all() else mask


def mask_name(adata: AnnData, mask_var) -> str | None:
    """What ``params`` records of ``mask_var``: the column used, None, or "array"."""
    if mask_var is HVG_IF_PRESENT:
        return "highly_variable" if "highly_variable" in adata.var else None
    return mask_var if mask_var is None or isinstance(mask_var, str) else "array"
