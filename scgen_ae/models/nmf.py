"""(Integrative) NMF as a trained-model object: gene loadings plus the quantile alignment
that makes the cell factors of different batches comparable (LIGER's iNMF + quantile norm).

The torch "module" only holds arrays (no gradient training): shared loadings ``H``
(k x genes), batch-specific loadings ``V`` (batches x k x genes) and the tables of the
quantile alignment, so :class:`BaseModel`'s safe save/load applies unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData
from torch import nn

from .. import _validate as v
from ..data import CellData
from . import _nmf_solver as solver
from ._base import BaseModel

TRANSFORMS = ("log1p", "none")
SOLVE_CHUNK = 4096  # cells per solve_cells chunk (its default): on disk, also the cells read at once
LOSSES = ("frobenius", "kl")


@dataclass(frozen=True)
class NMFConfig:
    """Settings of an :class:`NMF` that transforming new cells depends on.

    Attributes
    ----------
    transform
        "log1p" (counts -> normalise each cell to ``target_sum``, then log1p) or "none"
        (the non-negative values as given).
    lam
        Weight of iNMF's penalty on the batch-specific part (0 without batches).
    aligned
        Quantile alignment of the cell factors across batches (iNMF).
    reference_batch
        Index of the batch the factors are aligned to (the largest in training): the aligned
        factors take its quantiles and its units. None in files written before it was kept
        (their aligned factors stay in unit root-mean-square units).
    min_match
        A (batch, cluster) is aligned only when its expression signature correlates at least
        this much with the reference batch's same cluster (see :func:`fit_alignment`).
    """

    n_genes: int
    n_components: int = 10
    n_batches: int = 1
    loss: str = "frobenius"
    transform: str = "log1p"
    target_sum: float = 1e4
    lam: float = 5.0
    aligned: bool = False
    n_quantiles: int = 50
    min_cells: int = 20
    reference_batch: int | None = None
    min_match: float = 0.5

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r}; choose one of {LOSSES}.")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform={self.transform!r}; choose one of {TRANSFORMS}.")
        for name in ("n_genes", "n_components", "n_batches"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if int(self.n_quantiles) < 2:  # one quantile (probability 0) would map every cell to the minimum
            raise ValueError(f"n_quantiles must be >= 2 (quantiles matched per factor), got {self.n_quantiles!r}.")
        if self.lam < 0 or self.target_sum <= 0:
            raise ValueError(f"lam must be >= 0 and target_sum > 0, got lam={self.lam!r}, target_sum={self.target_sum!r}.")


class NMFModule(nn.Module):
    def __init__(self, cfg: NMFConfig):
        super().__init__()
        k, g, nb, nq = cfg.n_components, cfg.n_genes, cfg.n_batches, cfg.n_quantiles
        frozen = dict(requires_grad=False)
        self.H = nn.Parameter(torch.zeros(k, g), **frozen)
        self.V = nn.Parameter(torch.zeros(nb, k, g), **frozen)
        # quantile alignment: per-batch factor scales, then for each (batch, cluster, factor)
        # the batch's quantiles and the reference batch's (valid marks the mapped pairs)
        self.scales = nn.Parameter(torch.ones(nb, k), **frozen)
        self.q_source = nn.Parameter(torch.zeros(nb, k, k, nq), **frozen)
        self.q_target = nn.Parameter(torch.zeros(k, k, nq), **frozen)
        self.valid = nn.Parameter(torch.zeros(nb, k), **frozen)


def preprocess(X: sp.csr_matrix, transform: str, target_sum: float) -> sp.csr_matrix:
    """The matrix NMF factorises; "log1p" = scanpy's normalize_total(target_sum) + log1p, kept sparse."""
    if transform == "none":
        return X
    lib = np.asarray(X.sum(1), dtype=np.float64).ravel()
    scale = np.repeat(target_sum / np.maximum(lib, 1e-12), np.diff(X.indptr))
    return sp.csr_matrix((np.log1p(X.data * scale).astype(np.float32), X.indices, X.indptr), shape=X.shape)


def input_kind(transform: str) -> str:
    """What NMF with ``transform`` reads: counts for "log1p" (it normalises counts), any
    non-negative values ("real") for "none"."""
    return "counts" if transform == "log1p" else "real"


def check_nonnegative(X: sp.csr_matrix, layer: str | None) -> None:
    if X.nnz and X.data.min() < 0:
        where = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
        raise v.InputError(
            f"{where} has {int((X.data < 0).sum())} negative values; NMF needs non-negative data. Was it "
            "scaled (sc.pp.scale)? Pass the raw counts via layer= (with transform='log1p'), or the "
            "log-normalised values before scaling (with transform='none')."
        )


def split_by_batch(X: sp.csr_matrix, codes: np.ndarray, n_batches: int) -> tuple[list, list]:
    """Row blocks of X per batch, and the cell indices of each block."""
    idx = [np.flatnonzero(codes == b) for b in range(n_batches)]
    if n_batches == 1:  # all cells in order: X itself, not a copy
        return [X], idx
    return [X[i] for i in idx], idx


# ---------------------------------------------------------------- quantile alignment

def _cluster_scaled(Z: np.ndarray, codes: np.ndarray, scales: np.ndarray, knn: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Scaled factors, and each cell's cluster: its largest factor, smoothed by a majority vote
    over its ``knn`` nearest cells of the same batch (LIGER's refinement; argmax alone splits
    cell types between two similar factors)."""
    from sklearn.neighbors import NearestNeighbors

    S = Z / scales[codes]
    top = S.argmax(1)
    cluster = top.copy()
    for b in np.unique(codes):
        rows = np.flatnonzero(codes == b)
        n_nb = min(knn, len(rows))
        if n_nb < 2:
            continue
        nn = NearestNeighbors(n_neighbors=n_nb).fit(S[rows]).kneighbors(S[rows], return_distance=False)
        votes = np.zeros((len(rows), S.shape[1]), dtype=np.int64)
        np.add.at(votes, (np.repeat(np.arange(len(rows)), n_nb), top[rows][nn].ravel()), 1)
        cluster[rows] = votes.argmax(1)
    return S, cluster


def fit_alignment(Z: np.ndarray, codes: np.ndarray, loadings: np.ndarray, cfg: NMFConfig) -> dict[str, np.ndarray]:
    """LIGER's quantile normalisation, learnt as a table so new cells can be mapped the same way.

    Each batch's factors ``Z`` (n_cells, k) are scaled to unit root-mean-square; each cell is
    assigned to its largest factor (smoothed over its nearest cells); within each such
    cluster, every factor's distribution in a batch is mapped onto the reference batch's
    (``cfg.reference_batch``) by matching ``n_quantiles`` quantiles.

    A (batch, cluster) is left unmapped (only scaled) when either side has fewer than
    ``min_cells`` cells, or when the two sides are different populations that happen to
    share their largest factor: their expression signatures (the cluster's mean factors
    minus its batch's, through the shared ``loadings`` (k, n_genes)) correlate less than
    ``min_match``. On the four shared data sets (3 seeds, 114 pairs) same-population pairs
    correlate at 0.79-0.99; the one other, dendritic cells and megakaryocytes facing a
    T cell / monocyte mix, at 0.41: aligned, it merged the megakaryocytes into other cells.
    """
    k, nb, nq, ref = cfg.n_components, cfg.n_batches, cfg.n_quantiles, cfg.reference_batch
    scales = np.ones((nb, k), dtype=np.float32)
    for b in range(nb):
        rms = np.sqrt(np.mean(Z[codes == b] ** 2, axis=0))
        scales[b] = np.where(rms > 0, rms, 1.0)
    S, cluster = _cluster_scaled(Z, codes, scales)

    batch_means = [Z[codes == b].mean(0) if (codes == b).any() else None for b in range(nb)]

    def signature(b: int, c: int) -> np.ndarray:
        return (Z[(codes == b) & (cluster == c)].mean(0) - batch_means[b]) @ loadings

    probs = np.linspace(0.0, 1.0, nq)
    q_source = np.zeros((nb, k, k, nq), dtype=np.float32)
    q_target = np.zeros((k, k, nq), dtype=np.float32)
    valid = np.zeros((nb, k), dtype=np.float32)
    for c in range(k):
        ref_cells = S[(codes == ref) & (cluster == c)]
        if len(ref_cells) < cfg.min_cells:
            continue
        q_target[c] = np.quantile(ref_cells, probs, axis=0).T
        ref_signature = signature(ref, c)
        for b in range(nb):
            cells = S[(codes == b) & (cluster == c)]
            if b == ref or len(cells) < cfg.min_cells:
                continue
            if np.corrcoef(signature(b, c), ref_signature)[0, 1] >= cfg.min_match:
                q_source[b, c] = np.quantile(cells, probs, axis=0).T
                valid[b, c] = 1.0
    return {"scales": scales, "q_source": q_source, "q_target": q_target, "valid": valid}


def apply_alignment(Z: np.ndarray, codes: np.ndarray, tables: dict[str, np.ndarray], reference_batch: int | None) -> np.ndarray:
    """Aligned factors (n_cells, k) of factors ``Z`` from batches ``codes``, in the units of
    ``reference_batch`` (whose cells keep their own factors; unit root-mean-square if None)."""
    S, cluster = _cluster_scaled(Z, codes, tables["scales"])
    out = S.copy()
    nb, k = tables["valid"].shape
    for b in range(nb):
        for c in np.flatnonzero(tables["valid"][b] > 0):
            rows = np.flatnonzero((codes == b) & (cluster == c))
            for j in range(k):
                out[rows, j] = np.interp(S[rows, j], tables["q_source"][b, c, j], tables["q_target"][c, j])
    if reference_batch is not None:
        # back to data units: factor j's spread keeps its weight in distances, as in the unaligned W
        out *= tables["scales"][reference_batch]
    return out


class NMF(BaseModel):
    """A fitted (integrative) NMF (see :func:`scgen_ae.tl.nmf` to fit one)."""

    counts_needs = "this NMF model (fitted with transform='log1p', which normalises counts)"
    counts_otherwise = "fit a model on log-normalised values with sa.tl.nmf(adata, transform='none')"

    module_class = NMFModule
    config_class = NMFConfig

    @classmethod
    def input_kind_of(cls, config: NMFConfig) -> str:
        return input_kind(config.transform)

    def set_factors(self, H: np.ndarray, V: np.ndarray) -> None:
        with torch.no_grad():
            self.module.H.copy_(torch.as_tensor(H))
            self.module.V.copy_(torch.as_tensor(V))

    def set_alignment(self, tables: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for name, value in tables.items():
                getattr(self.module, name).copy_(torch.as_tensor(value))

    def alignment_tables(self) -> dict[str, np.ndarray]:
        return {n: getattr(self.module, n).detach().cpu().numpy() for n in ("scales", "q_source", "q_target", "valid")}

    @property
    def loadings(self) -> np.ndarray:
        """Shared gene loadings, (n_genes, n_components); each factor has unit L2 norm."""
        return self.module.H.detach().cpu().numpy().T

    def _matrix(self, X: sp.csr_matrix, layer) -> sp.csr_matrix:
        """The preprocessed matrix of cells ``X`` (all of them in memory, or one chunk from disk)."""
        if self.config.transform == "none":
            check_nonnegative(X, self.layer if layer == "model" else layer)
        return preprocess(X, self.config.transform, self.config.target_sum)

    def _cell_factors_on_disk(self, data, layer, chunk: int = SOLVE_CHUNK) -> np.ndarray:
        """:meth:`cell_factors` of on-disk cells, read ``chunk`` cells of a batch at a time:
        the chunks ``solve_cells`` cuts in memory, so the same factors, one chunk in memory."""
        Z = np.zeros((data.n_cells, self.config.n_components), dtype=np.float32)
        for b in range(self.config.n_batches):
            rows = np.flatnonzero(data.batch == b)
            for s in range(0, len(rows), chunk):
                cells = rows[s:s + chunk]
                Z[cells] = self.cell_factors(self._matrix(data.read_rows(cells), layer), data.batch[cells])
        return Z

    def cell_factors(self, X: sp.csr_matrix, codes: np.ndarray, max_iter: int = 200, tol: float = 1e-5) -> np.ndarray:
        """Non-negative least squares (or KL) cell factors of the preprocessed ``X`` given the loadings."""
        Z = np.zeros((X.shape[0], self.config.n_components), dtype=np.float32)
        blocks, idx = split_by_batch(X, codes, self.config.n_batches)
        H, V = self.module.H.detach(), self.module.V.detach()
        for b, (block, rows) in enumerate(zip(blocks, idx)):
            if len(rows):
                lam = self.config.lam if self.config.aligned else 0.0
                Z[rows] = solver.solve_cells(block, H, V[b], lam, self.config.loss, max_iter, tol).cpu().numpy()
        return Z

    @torch.no_grad()
    def transform(self, adata: AnnData, *, layer="model", batch_key="model", pad_missing: bool = False) -> np.ndarray:
        """Cell factors ``(n_cells, n_components)`` of new cells: batch-aligned for an iNMF model.

        ``layer`` / ``batch_key`` default to those used in training. The cells' own
        factors are solved with the loadings fixed, then (iNMF) mapped through the
        quantile alignment learnt in training.
        """
        data = self._cell_data(adata, layer, batch_key, pad_missing)
        codes = data.batch
        if isinstance(data, CellData):
            Z = self.cell_factors(self._matrix(data.X, layer), codes)
        else:  # X on disk (sa.read_backed): streamed
            Z = self._cell_factors_on_disk(data, layer)
        if not self.config.aligned:
            return Z
        return apply_alignment(Z, codes, self.alignment_tables(), self.config.reference_batch)
