"""The cells x genes data as the NMF solver (:mod:`._nmf_solver`) sees it: CSR chunks of
cells (views of the input's rows, held dense as well when deep enough), chunks read again
from disk on every pass, and the rank-q sketch of the data that plain fits also pass over.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ..data import transpose_pattern

# CPU chunks at least this dense (within DENSE_BYTES as arrays, in all) are multiplied as
# dense matrices: at density 0.41 (CellBench 3 protocols) the two products take a third less
# time than the sparse kernels, at 0.35 the same; at 0.06-0.12 (10x PBMC) 2-3x longer. (numpy's
# BLAS was faster still, but its threads spin against torch's: 20x slower with 2 of each.)
DENSE_FROM, DENSE_BYTES = 0.3, 2**28


def _csr(X: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    return _csr_parts(X.indptr, X.indices, X.data, X.shape, device)


def _csr_parts(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape, device) -> torch.Tensor:
    """Torch CSR on the arrays' own memory on the CPU (int32 indices, float32 values: no copy)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(indptr.astype(np.int32, copy=False)),
                                       torch.from_numpy(indices.astype(np.int32, copy=False)),
                                       torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)),
                                       shape, device=device)


@dataclass
class Chunk:
    """Rows ``start:stop`` of block ``block``: X as torch CSR, and X^T (built on first use; its
    pattern is scipy's transpose of X's, the order :func:`~scgen_ae.data.transpose_pattern` describes)."""

    block: int
    start: int
    stop: int
    X: torch.Tensor
    sq_norm: float
    dense: torch.Tensor | None = None  # X as a dense matrix, for dense-enough chunks on the CPU
    _XT: torch.Tensor | None = None
    _kl_index: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def of(cls, X: sp.csr_matrix, block: int, start: int, stop: int, device,
           dense_budget: int | None = None) -> "Chunk":
        """Rows ``start:stop`` of X. A row range of a CSR matrix is one contiguous stretch of its
        values: on the CPU the chunk's X is a view of X's memory, not a copy (scipy's own row
        slice, and its constructor on small slices, copy)."""
        lo, hi = X.indptr[start], X.indptr[stop]
        parts = (X.indptr[start:stop + 1] - lo, X.indices[lo:hi], X.data[lo:hi])
        shape = (stop - start, X.shape[1])
        view = _csr_parts(*parts, shape, device)
        return cls.from_rows(sp.csr_matrix(parts[::-1], shape=shape), block, start, stop, device, view, dense_budget)

    @classmethod
    def from_rows(cls, sub: sp.csr_matrix, block: int, start: int, stop: int, device,
                  X: torch.Tensor | None = None, dense_budget: int | None = None) -> "Chunk":
        """The chunk of rows ``sub`` (= rows ``start:stop`` of block ``block``); ``X``: ``sub``
        as torch CSR if already made. Held dense as well when dense enough and at most
        ``dense_budget`` (default DENSE_BYTES) bytes as an array."""
        size = sub.shape[0] * sub.shape[1]
        dense_budget = DENSE_BYTES if dense_budget is None else dense_budget
        dense = None
        if torch.device(device).type == "cpu" and sub.nnz >= DENSE_FROM * size and 4 * size <= dense_budget:
            dense = torch.from_numpy(sub.toarray().astype(np.float32, copy=False))
        return cls(block, start, stop, _csr(sub, device) if X is None else X,
                   float(np.square(sub.data, dtype=np.float64).sum()), dense)

    def _host(self) -> sp.csr_matrix:
        """X as scipy CSR (on the CPU: on X's own memory)."""
        X = self.X
        return sp.csr_matrix((X.values().cpu().numpy(), X.col_indices().cpu().numpy(), X.crow_indices().cpu().numpy()),
                             shape=X.shape)

    @property
    def XT(self) -> torch.Tensor:
        """X^T as torch CSR, built on first use: the products of dense chunks never need it."""
        if self._XT is None:
            self._XT = _csr(self._host().T.tocsr(), self.X.device)
        return self._XT

    def _nonzero_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row of each non-zero, ``perm`` with X^T's values = X's values[perm]): KL updates
        only, so built on first use (16 bytes per non-zero that Frobenius fits never need)."""
        if self._kl_index is None:
            host = self._host()
            _, _, perm = transpose_pattern(host)
            rows = np.repeat(np.arange(host.shape[0]), np.diff(host.indptr))
            device = self.X.device
            self._kl_index = (torch.from_numpy(rows).to(device), torch.from_numpy(perm).to(device))
        return self._kl_index

    def mm(self, D: torch.Tensor) -> torch.Tensor:
        """X_c @ D for dense D (genes x k)."""
        if self.dense is not None:  # as (D^T X_c^T)^T: torch's fast layout for a thin product
            return (D.T @ self.dense.T).T
        return self.X @ D.contiguous()

    def tmm(self, D: torch.Tensor) -> torch.Tensor:
        """X_c^T @ D for dense D (cells x k)."""
        if self.dense is not None:
            return (D.T @ self.dense).T
        return self.XT @ D.contiguous()

    def at_nonzeros(self, W: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
        """(W H) at the non-zeros of X_c, without forming W H."""
        return (W[self._nonzero_index()[0]] * H.T[self.X.col_indices()]).sum(1)

    def mm_values(self, values: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
        """S @ D, S with X_c's pattern and ``values`` (in X_c's order)."""
        return _same_pattern(self.X, values) @ D.contiguous()

    def tmm_values(self, values: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
        """S^T @ D, S with X_c's pattern and ``values`` (in X_c's order)."""
        return _same_pattern(self.XT, values[self._nonzero_index()[1]]) @ D.contiguous()


def _same_pattern(M: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(M.crow_indices(), M.col_indices(), values, M.shape)


@dataclass
class SketchChunk:
    """Rows ``start:stop`` of block ``block`` of the rank-q sketch ``L P^T`` of X (L: cells
    x q, P: genes x q with orthonormal columns): the part of :class:`Chunk` a Frobenius fit uses.
    ``sq_norm`` is X's, not the sketch's: the sketch is X's projection on the span of P (or
    L), so the fit's objective is then 1/2 ||sketch - W H||^2 + 1/2 ||X - sketch||^2, which
    differs from 1/2 ||X - W H||^2 by only <W H, X - sketch>, and its relative changes are
    on the scale of the objective (not of the sketch's part of it)."""

    block: int
    start: int
    stop: int
    L: torch.Tensor
    P: torch.Tensor
    sq_norm: float

    def __post_init__(self):
        # both layouts: the products below, written as (k x .) @ (. x .), run 3-5x faster
        # on the CPU than with a transposed operand (0.06 against 0.3 ms at 2,000 x 2,000)
        self.L, self.P = self.L.contiguous(), self.P.contiguous()
        self.Lt, self.Pt = self.L.T.contiguous(), self.P.T.contiguous()

    def mm(self, D: torch.Tensor) -> torch.Tensor:
        """L P^T D for D (genes x k), as (D^T P L^T)^T."""
        return ((D.T @ self.P) @ self.Lt).T

    def tmm(self, D: torch.Tensor) -> torch.Tensor:
        """P L^T D for D (cells x k), as (D^T L P^T)^T."""
        return ((D.T @ self.L) @ self.Pt).T


def sketch_chunks(chunks: list[Chunk], U: torch.Tensor, S: torch.Tensor, Vt: torch.Tensor) -> list[SketchChunk]:
    """The sketch ``(U S) Vt`` of the row-stacked ``chunks``, cut into the same chunks."""
    L, P = U * S, Vt.T
    out, pos = [], 0
    for c in chunks:
        rows = L[pos:pos + c.stop - c.start]
        pos += c.stop - c.start
        out.append(SketchChunk(c.block, c.start, c.stop, rows, P, c.sq_norm))
    return out


def make_chunks(blocks: list[sp.csr_matrix], chunk_size: int | None, device) -> list[Chunk]:
    """All chunks, kept: their dense forms share one budget of DENSE_BYTES."""
    out, budget = [], DENSE_BYTES
    for b, X in enumerate(blocks):
        step = X.shape[0] if not chunk_size else int(chunk_size)
        for s in range(0, X.shape[0], step):
            out.append(Chunk.of(X, b, s, min(s + step, X.shape[0]), device, budget))
            budget -= 0 if out[-1].dense is None else out[-1].dense.nbytes
    return out


class StreamedChunks:
    """The chunks of :func:`make_chunks`, built again from ``read`` on every pass instead of
    kept: memory O(chunk) for the data whatever the number of cells (cells on disk).

    read : cell indices -> their (preprocessed) rows as CSR;  block_cells : cells of each block
    """

    def __init__(self, read: Callable[[np.ndarray], sp.csr_matrix], block_cells: list[np.ndarray],
                 chunk_size: int, device):
        self.read, self.block_cells, self.chunk_size, self.device = read, block_cells, int(chunk_size), device

    def _spans(self) -> Iterator[tuple[int, int, int]]:
        """(block, start, stop) of each chunk, in :func:`make_chunks`' order."""
        for b, cells in enumerate(self.block_cells):
            for s in range(0, len(cells), self.chunk_size):
                yield b, s, min(s + self.chunk_size, len(cells))

    def __iter__(self) -> Iterator[Chunk]:
        for b, s, stop in self._spans():
            yield Chunk.from_rows(self.read(self.block_cells[b][s:stop]), b, s, stop, self.device)

    def __len__(self) -> int:
        return sum(1 for _ in self._spans())

    def value_sum(self) -> float:
        """Sum of all values (the initialisation's mean), in one pass."""
        return sum(float(self.read(self.block_cells[b][s:e]).data.sum(dtype=np.float64)) for b, s, e in self._spans())
