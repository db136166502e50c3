"""What a trained model reads from an AnnData, recorded once: :class:`DataSpec`.

The spec is learnt at training (genes, layer, batch key and categories, covariates, the kind
of input), stored with the model and in its file, and it is what turns any new AnnData into
validated cells for that model (:meth:`DataSpec.cells`): genes aligned by name (padded on
request), batches and covariates coded with the training categories, the values checked,
in memory or streamed from disk alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from anndata import AnnData

from . import _validate as v
from . import ondisk
from .covariates import CovariateSpec
from .data import CellData

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
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind={self.input_kind!r}; choose one of {INPUT_KINDS}.")
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
        advice = dict(needs=needs, otherwise=otherwise)
        if ondisk.is_on_disk(adata, layer):  # stream X from disk instead of reading it
            data = ondisk.apply_data(adata, list(self.var_names), list(self.batch_categories), batch_key,
                                     what if counts else "gaussian", pad_missing, **advice)
        else:
            X = v.get_matrix(adata, layer, sorted_indices=sorted_indices)
            pos, _ = v.align_genes(adata, self.var_names, pad_missing)
            X = v.aligned_matrix(X, pos)
            if counts:
                v.check_counts(X, layer, what, **advice)
            codes, _ = v.batch_codes(adata, batch_key, list(self.batch_categories))
            data = CellData(X, codes, np.asarray(X.sum(1)).ravel(), log1p_input=counts,
                            sorted_indices=sorted_indices)
        data.cat_covs, data.cont_covs = cat_covs, cont_covs
        return data

    # ------------------------------------------------------------ model files
    def to_header(self) -> dict:
        """The fields of a model file's header (``var_names`` ... ``covariates``, ``input_kind``)."""
        return {"var_names": list(self.var_names), "layer": self.layer, "batch_key": self.batch_key,
                "batch_categories": list(self.batch_categories), "covariates": self.covariates.to_header(),
                "input_kind": self.input_kind}
