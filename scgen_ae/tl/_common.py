"""What every ``tl`` front shares: validation of the training data, options, gene masks.
Writing results (in one step at the end, so a failure anywhere leaves the caller's AnnData
untouched) lives in :mod:`scgen_ae._results`, which models use too."""
from __future__ import annotations

import dataclasses

import numpy as np
from anndata import AnnData

from .. import _validate as v
from ..covariates import CovariateSpec
from .._results import (get_model, keep_model, params_record, returned, write_and_return,  # noqa: F401
                       write_results)
from ..likelihoods import models_counts
from ..spec import DataSpec
from ..train import TrainConfig, train_config

TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def training_data(adata: AnnData, layer: str | None, batch_key: str | None, likelihood: str | None, *,
                  needs: str | None = None, otherwise: str | None = v.GAUSSIAN_ADVICE,
                  allow_single_batch: bool = False, covariates: CovariateSpec | None = None):
    """The validated training cells of ``adata`` for a model of ``likelihood`` (None or
    "counts": counts, no likelihood named) and their batch categories: (cells, categories).

    The cells come from :meth:`~scgen_ae.spec.DataSpec.learn`, which also streams ``X`` from
    disk; ``needs`` / ``otherwise`` word the error for data that are not counts (see
    :func:`scgen_ae._validate.check_counts`), ``allow_single_batch`` and ``covariates`` as there.
    """
    spec, data = DataSpec.learn(adata, layer=layer, batch_key=batch_key,
                                input_kind="counts" if models_counts(likelihood) else "real", covariates=covariates,
                                allow_single_batch=allow_single_batch, needs=needs, otherwise=otherwise,
                                what=likelihood or "counts")
    return data, list(spec.batch_categories)


def split_kwargs(kwargs: dict) -> tuple[TrainConfig, dict]:
    """Separate training options (:class:`TrainConfig` fields) from the rest; ``seed`` and
    ``device`` not given come from ``sa.settings``."""
    train = {k: kwargs.pop(k) for k in list(kwargs) if k in TRAIN_FIELDS}
    return train_config(**train), kwargs


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
