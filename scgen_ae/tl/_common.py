"""What every ``tl`` front shares: validation of the training data and writing results
in one step at the end, so a failure anywhere leaves the caller's AnnData untouched."""
from __future__ import annotations

import dataclasses

import numpy as np
from anndata import AnnData

from .. import _validate as v
from .. import ondisk
from ..data import CellData
from ..likelihoods import COUNT_LIKELIHOODS
from ..train import TrainConfig

TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def training_data(adata: AnnData, layer: str | None, batch_key: str | None, likelihood: str | None, *,
                  needs: str | None = None, otherwise: str | None = v.GAUSSIAN_ADVICE):
    """Validate ``adata`` for training; return (CellData, batch categories).

    When ``X`` is a CSR matrix on disk (backed ``.h5ad``, ``sa.read_backed``) the data
    source is an :class:`~scgen_ae.ondisk.OnDiskCellData` that streams it instead.
    ``needs`` / ``otherwise`` word the error for data that are not counts
    (see :func:`scgen_ae._validate.check_counts`).
    """
    if isinstance(adata, AnnData):
        v.check_unique_genes(adata)
    if ondisk.is_on_disk(adata, layer):
        return ondisk.training_data(adata, layer, batch_key, likelihood, needs=needs, otherwise=otherwise)
    X = v.get_matrix(adata, layer)
    counts = likelihood in COUNT_LIKELIHOODS or likelihood is None
    if counts:
        v.check_counts(X, layer, likelihood or "counts", needs=needs, otherwise=otherwise)
    v.check_not_empty(X, layer)
    codes, cats = v.batch_codes(adata, batch_key)
    return CellData(X, codes, np.asarray(X.sum(1)).ravel(), log1p_input=counts), cats


def split_kwargs(kwargs: dict) -> tuple[TrainConfig, dict]:
    """Separate training options (:class:`TrainConfig` fields) from the rest."""
    train = {k: kwargs.pop(k) for k in list(kwargs) if k in TRAIN_FIELDS}
    return TrainConfig(**train), kwargs


def _uns_safe(value):
    """Make a parameter value storable in ``.uns`` / ``.h5ad``."""
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return [str(x) for x in value]
    return value


def write_results(adata: AnnData, *, obsm=None, layers=None, varm=None, uns=None) -> None:
    """Assign all outputs at once (after everything that can fail has run)."""
    for store, items in ((adata.obsm, obsm), (adata.layers, layers), (adata.varm, varm), (adata.uns, uns)):
        for key, value in (items or {}).items():
            store[key] = value


def params_record(**params) -> dict:
    return {k: _uns_safe(val) for k, val in params.items()}
