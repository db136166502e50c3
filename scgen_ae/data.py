"""AnnData -> tensors. The matrix stays sparse (CSR) in memory; each minibatch is
densified on its own, so memory is O(cells x nnz) for the data and O(batch x genes)
for the working set. No AnnData indexing happens inside the training loop.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import gammaln

from ._validate import check_split, to_csr32  # noqa: F401  (to_csr32: also imported from here)
from .likelihoods import Minibatch


@dataclass
class CellData:
    """The cells a model trains on or is applied to, already validated.

    X : (n_cells, n_genes) CSR float32 matrix without stored zeros
    batch : (n_cells,) int64 codes into the model's batch categories
    library : (n_cells,) observed library size (row sums of the counts)
    labels : optional (n_cells,) int64 label codes for a classifier, -1 for unlabelled cells
    cat_covs, cont_covs : optional (n_cells, k) int64 codes and (n_cells, c) float32 scaled values
        of the covariates besides the batch (:meth:`~scgen_ae.covariates.CovariateSpec.encode`)
    unmatched : optional (n_cells, n_batches) bool: the batches each cell may not be paired with
        (:attr:`~scgen_ae.likelihoods.Minibatch.unmatched`)
    """

    X: sp.csr_matrix
    batch: np.ndarray
    library: np.ndarray
    log1p_input: bool = True  # Minibatch.x = log1p(counts), computed on the non-zeros only
    # False keeps the column order of each row as given (see to_csr32): for callers that
    # only densify rows, where sorting the whole matrix is a copy for nothing
    sorted_indices: bool = True
    labels: np.ndarray | None = None
    cat_covs: np.ndarray | None = None
    cont_covs: np.ndarray | None = None
    unmatched: np.ndarray | None = None

    def __post_init__(self):
        self.X = to_csr32(self.X, sorted_indices=self.sorted_indices)  # no copy unless stored zeros, another format

    @property
    def n_cells(self) -> int:
        return self.X.shape[0]

    def row_block(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` (what :func:`iter_row_blocks` reads, here and on disk): a view
        of ``X``'s arrays, not a copy, so read it only."""
        lo, hi = self.X.indptr[start], self.X.indptr[stop]
        return sp.csr_matrix((self.X.data[lo:hi], self.X.indices[lo:hi], self.X.indptr[start:stop + 1] - lo),
                             shape=(stop - start, self.X.shape[1]))

    def read_rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """Rows ``rows`` (any order) as a CSR copy: what
        :meth:`~scgen_ae.ondisk.OnDiskCellData.read_rows` reads from disk, in memory."""
        return self.X[rows]

    @cached_property
    def log_x_factorial(self) -> np.ndarray:
        """(n_cells,) float32: each cell's sum of lgamma(x + 1) over its counts, the data-only
        constant of the count likelihoods. Computed once: per minibatch, gammaln over the
        non-zeros was 10 % of a training step on deeply sequenced data (CellBench)."""
        out = np.empty(self.n_cells, dtype=np.float32)
        for start, stop, block in iter_row_blocks(self):
            rows = np.repeat(np.arange(stop - start), np.diff(block.indptr))
            out[start:stop] = np.bincount(rows, weights=gammaln(block.data + 1.0), minlength=stop - start)
        return out

    def minibatch(self, idx: np.ndarray, *, constants: bool = True) -> Minibatch:
        """Densify the rows ``idx`` into a :class:`Minibatch`; ``constants=False`` leaves
        ``log_x_factorial`` at 0 (only the likelihoods read it, and the first use computes it
        for every cell)."""
        sub = self.X[idx]
        dense = sp.csr_matrix((np.log1p(sub.data), sub.indices, sub.indptr), shape=sub.shape) if self.log1p_input else sub
        x = torch.from_numpy(dense.toarray())
        nz_row = np.repeat(np.arange(len(idx)), np.diff(sub.indptr))
        return Minibatch(
            x=x,
            batch=torch.from_numpy(self.batch[idx]),
            log_library=torch.from_numpy(np.log(np.maximum(self.library[idx], 1.0))).float()[:, None],
            nz_row=torch.from_numpy(nz_row),
            nz_col=torch.from_numpy(sub.indices.astype(np.int64)),
            nz_val=torch.from_numpy(sub.data),
            log_x_factorial=torch.from_numpy(self.log_x_factorial[idx]) if constants else torch.zeros(len(idx)),
            label=None if self.labels is None else torch.from_numpy(self.labels[idx]),
            cat_covs=None if self.cat_covs is None else torch.from_numpy(self.cat_covs[idx]),
            cont_covs=None if self.cont_covs is None else torch.from_numpy(self.cont_covs[idx]),
            unmatched=None if self.unmatched is None else torch.from_numpy(self.unmatched[idx]),
        )

    def iterate(self, idx: np.ndarray, batch_size: int, rng: np.random.Generator | None = None,
                drop_last_if_tiny: bool = True, constants: bool = True) -> Iterator[Minibatch]:
        """Yield minibatches over ``idx``, shuffled when ``rng`` is given.

        A final minibatch of fewer than 3 cells is merged away when training, because
        batch normalisation cannot use it (scvi-tools fails on it instead).
        ``constants=False``: see :meth:`minibatch` (applying a model needs no likelihood).
        """
        if rng is not None:
            idx = rng.permutation(idx)
        starts = list(range(0, len(idx), batch_size))
        if drop_last_if_tiny and len(starts) > 1 and len(idx) - starts[-1] < 3:
            starts.pop()
        for i, s in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else len(idx)
            yield self.minibatch(idx[s:end], constants=constants)


ROW_BLOCK = 4096  # cells per block in whole-matrix passes: O(block x nnz per cell) memory


def iter_row_blocks(data, block: int = ROW_BLOCK) -> Iterator[tuple[int, int, sp.csr_matrix]]:
    """``(start, stop, rows start:stop as CSR)`` over all cells of a :class:`CellData` or an
    :class:`~scgen_ae.ondisk.OnDiskCellData`, in order: whole-matrix statistics (gene sums,
    log-likelihoods) then need one block at a time, one contiguous read each on disk."""
    for start in range(0, data.n_cells, block):
        stop = min(start + block, data.n_cells)
        yield start, stop, data.row_block(start, stop)


def transpose_pattern(X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR structure (indptr, indices) of ``X.T`` and the permutation ``perm`` such that
    ``X.T``'s values are ``X.data[perm]``: one transpose of the positions, reused for any
    values on X's pattern (sparse products with X^T whose values change every step)."""
    # 1-based positions: none is a stored zero that a conversion could treat as absent
    positions = sp.csr_matrix((np.arange(1, X.nnz + 1, dtype=np.int64), X.indices, X.indptr), shape=X.shape)
    t = positions.T.tocsr()
    return t.indptr, t.indices, t.data - 1


def train_validation_split(n: int, validation_fraction: float, rng: np.random.Generator):
    """Random split of ``range(n)``; returns (train_idx, validation_idx or empty).

    Refuses (:class:`~scgen_ae.InputError`) a fraction that leaves fewer than 2 training
    cells, or none to validate on although ``validation_fraction > 0``.
    """
    n_val = check_split(n, validation_fraction)
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
