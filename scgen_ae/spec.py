"""What a trained model reads from an AnnData, recorded once: :class:`DataSpec`.

The spec is learnt at training from the training cells (:meth:`DataSpec.learn`: genes, layer,
batch key and categories, covariates, the kind of input), stored with the model and in its
file, and it is what turns any new AnnData into validated cells for that model
(:meth:`DataSpec.cells`): genes aligned by name (padded on request), batches and covariates
coded with the training categories, the values checked, in memory or streamed from disk
alike. Both are here, so AnnData becomes cells in this module only.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from . import _validate as v
from . import ondisk
from .covariates import CovariateSpec
from .data import CellData

Check = Callable[[sp.csr_matrix], None]

#: what a model reads: "counts" (non-negative integers; the encoder sees log1p) or "real"
#: (e.g. log-normalised values, for the gaussian likelihood and NMF on such data)
INPUT_KINDS = ("counts", "real")


@dataclass(frozen=True)
class DataSpec:
    """The AnnData fields a model was trained on, applied unchanged to new cells.

    Attributes
    ----------
    var_names
        The trained genes, in the model's order.
    layer
        The layer of the training values (None: ``X``); the default for new data.
    batch_key, batch_categories
        The ``obs`` column of the batches and its categories (codes index these); one
        category ``"all"`` without a batch key.
    covariates
        The covariates besides the batch (:class:`~scgen_ae.covariates.CovariateSpec`).
    input_kind
        "counts" or "real" (see :data:`INPUT_KINDS`).
    """

    var_names: tuple[str, ...]
    layer: str | None = None
    batch_key: str | None = None
    batch_categories: tuple[str, ...] = ("all",)
    covariates: CovariateSpec = field(default_factory=CovariateSpec)
    input_kind: str = "counts"

    def __post_init__(self):
        _check_input_kind(self.input_kind)
        object.__setattr__(self, "var_names", tuple(map(str, self.var_names)))
        object.__setattr__(self, "batch_categories", tuple(map(str, self.batch_categories)))

    def with_categories(self, batch_key: str | None, batch_categories, covariates: CovariateSpec) -> "DataSpec":
        """The spec with other batch and covariate categories (a model extended by surgery)."""
        return replace(self, batch_key=batch_key, batch_categories=tuple(batch_categories), covariates=covariates)

    def cells(self, adata: AnnData, *, layer="model", batch_key="model", pad_missing: bool = False,
              sorted_indices: bool = True, needs: str | None = None, otherwise: str | None = None,
              what: str = "counts"):
        """``adata`` as validated cells for the model: a :class:`~scgen_ae.data.CellData`, or an
        :class:`~scgen_ae.ondisk.OnDiskCellData` that streams a backed ``X``.

        ``layer`` / ``batch_key`` "model" mean the spec's. Refused (:class:`~scgen_ae.InputError`,
        before any pass over ``X`` where ``obs`` or ``var`` decide): a model gene missing
        (unless ``pad_missing``), unseen batches or covariate categories, missing covariate
        columns; then NaN / Inf, and for counts non-integer or negative values (``needs`` /
        ``otherwise`` / ``what`` word that error, as :func:`scgen_ae._validate.check_counts`).
        ``sorted_indices``: see :class:`~scgen_ae.data.CellData`.
        """
        layer = self.layer if layer == "model" else layer
        batch_key = self.batch_key if batch_key == "model" else batch_key
        v.check_anndata(adata)
        cat_covs, cont_covs = self.covariates.encode(adata.obs)  # obs is cheap: its errors come first
        counts = self.input_kind == "counts"
        check = values_check(layer, self.input_kind, what, needs=needs, otherwise=otherwise)
        if ondisk.is_on_disk(adata, layer):  # stream X from disk instead of reading it
            data = ondisk.apply_data(adata, list(self.var_names), list(self.batch_categories), batch_key, check,
                                     pad_missing, log1p_input=counts)
        else:
            X = v.get_matrix(adata, layer, sorted_indices=sorted_indices)
            pos, _ = v.align_genes(adata, self.var_names, pad_missing)
            X = v.aligned_matrix(X, pos)
            check(X)
            codes, _ = v.batch_codes(adata, batch_key, list(self.batch_categories))
            data = CellData(X, codes, np.asarray(X.sum(1)).ravel(), log1p_input=counts,
                            sorted_indices=sorted_indices)
        data.cat_covs, data.cont_covs = cat_covs, cont_covs
        return data

    @classmethod
    def learn(cls, adata: AnnData, *, layer: str | None = None, batch_key: str | None = None,
              input_kind: str = "counts", covariates: CovariateSpec | None = None, allow_single_batch: bool = False,
              check: Check | None = None, needs: str | None = None, otherwise: str | None = v.GAUSSIAN_ADVICE,
              what: str = "counts", sorted_indices: bool = True):
        """The spec of the training cells ``adata`` and those cells, validated: ``(spec, cells)``.

        ``cells`` is a :class:`~scgen_ae.data.CellData`, or an :class:`~scgen_ae.ondisk.OnDiskCellData`
        that streams ``X`` when it is a CSR or dense matrix on disk (a ``layer`` is in memory even
        then: anndata's backed mode reads layers whole). Refused (:class:`~scgen_ae.InputError`):
        duplicate genes; then, on disk, a bad ``batch_key`` before the one pass over ``X``, in
        memory after it; NaN / Inf, values ``check`` refuses, cells or genes without any count.

        Parameters
        ----------
        input_kind
            "counts" (checked as :func:`scgen_ae._validate.check_counts`, worded by ``needs`` /
            ``otherwise`` / ``what``) or "real" (no value check).
        covariates
            The covariates learnt from ``adata.obs`` (:meth:`~scgen_ae.covariates.CovariateSpec.learn`),
            whose codes the cells carry.
        allow_single_batch
            A ``batch_key`` with one category is accepted (see :func:`scgen_ae._validate.batch_codes`).
        check
            A check of a block of values (raising InputError) in place of the counts check.
        sorted_indices
            See :class:`~scgen_ae.data.CellData` (in memory only).
        """
        _check_input_kind(input_kind)
        if isinstance(adata, AnnData):
            v.check_unique_genes(adata)
        counts = input_kind == "counts"
        check = check or values_check(layer, input_kind, what, needs=needs, otherwise=otherwise)
        if ondisk.is_on_disk(adata, layer):
            codes, cats = v.batch_codes(adata, batch_key, allow_single=allow_single_batch)  # obs first: cheap
            data = ondisk.validated(adata, layer, check)
            data.batch, data.log1p_input = codes, counts
        else:
            X = v.get_matrix(adata, layer, sorted_indices=sorted_indices)
            check(X)
            v.check_not_empty(X, layer)
            codes, cats = v.batch_codes(adata, batch_key, allow_single=allow_single_batch)
            data = CellData(X, codes, np.asarray(X.sum(1)).ravel(), log1p_input=counts, sorted_indices=sorted_indices)
        covariates = covariates if covariates is not None else CovariateSpec()
        if covariates:
            data.cat_covs, data.cont_covs = covariates.encode(adata.obs)
        return cls(tuple(adata.var_names), layer, batch_key, tuple(cats), covariates, input_kind), data

    # ------------------------------------------------------------ model files
    def to_header(self) -> dict:
        """The fields of a model file's header (``var_names`` ... ``covariates``, ``input_kind``)."""
        return {"var_names": list(self.var_names), "layer": self.layer, "batch_key": self.batch_key,
                "batch_categories": list(self.batch_categories), "covariates": self.covariates.to_header(),
                "input_kind": self.input_kind}


def _check_input_kind(input_kind: str) -> None:
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind={input_kind!r}; choose one of {INPUT_KINDS}.")


def values_check(layer: str | None, input_kind: str, what: str = "counts", *, needs: str | None = None,
                 otherwise: str | None = None) -> Check:
    """The check of a block of values (in memory, or one block streamed from disk) for input
    of ``input_kind``: :func:`scgen_ae._validate.check_counts` for counts, none for real values."""
    if input_kind != "counts":
        return lambda X: None
    return lambda X: v.check_counts(X, layer, what, needs=needs, otherwise=otherwise)
