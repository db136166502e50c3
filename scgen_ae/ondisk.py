"""Out-of-core cells: a data source with :class:`~scgen_ae.data.CellData`'s interface
that reads its counts from a matrix on disk: CSR in a backed ``.h5ad`` or a zarr store, or
dense in a backed ``.h5ad``. Any backed AnnData streams, however it was opened
(``anndata.read_h5ad(path, backed="r")`` or :func:`read_backed`).

Why this design (measured in BENCHMARKS.md, issue 8):

- anndata's own lazy objects find the matrix: ``ad.read_h5ad(path, backed="r").X`` and
  ``ad.io.sparse_dataset(zarr_group["X"])`` are both a ``CSRDataset``; :func:`read_backed`
  opens either kind of file that way. The rows are then read straight from its three
  arrays with ``indptr`` kept in memory (8 bytes per cell): ``CSRDataset[a:b]`` re-reads
  ``indptr`` on every call and was 1.5x slower for the same row blocks.
- Training needs shuffled cells, disks want contiguous reads. Rows are grouped in file
  order into chunks of :data:`CHUNK_CELLS` cells; each epoch visits the chunks in random
  order, :data:`WINDOW_CHUNKS` chunks at a time (one contiguous read per chunk), and
  shuffles the cells of a window before cutting minibatches (the ``annbatch`` /
  scDataset scheme). A window holds cells of 64 random places in the file, so a file
  sorted by batch still gives mixed minibatches.
- Minibatches are cut exactly where :meth:`CellData.iterate` cuts them (same sizes,
  same count), and built by the in-memory code itself (a :class:`CellData` per window).
- The next window is read in a background thread while the current one trains.
- A read never spans more than a window of rows: the validation cells, 1 in 10 spread
  over the whole file, are read a window at a time, not in one read of the whole file.
  Dense rows are read :data:`DENSE_READ_VALUES` values at a time and kept as CSR.

Memory is O(window) for the counts plus about 40 bytes per cell of bookkeeping
(``indptr``, batch codes, library sizes, index arrays): 40 MB at 10^6 cells.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from . import _validate as v
from .data import CellData, iter_row_blocks, to_csr32
from .likelihoods import Minibatch

CHUNK_CELLS = 256  # contiguous rows per read
WINDOW_CHUNKS = 64  # chunks shuffled together (16,384 cells by default)
SCAN_CELLS = 16_384  # rows per block in the validation pass
PREFETCH = True  # read the next window in a background thread
DENSE_READ_VALUES = 1 << 22  # values per read of a dense matrix on disk (16 MB of float32)


def _stored(adata: AnnData, layer: str | None):
    """Where ``adata.X`` is on disk: the group of a CSR matrix, or a dense 2-D h5py dataset;
    None when it is in memory or CSC (which cannot be read by rows), and for any ``layer``:
    anndata's backed mode keeps layers in memory."""
    import h5py
    from anndata.abc import CSRDataset

    if not isinstance(adata, AnnData) or layer is not None:
        return None
    X = adata.X  # a backed AnnData hands out a CSRDataset / h5py.Dataset here, without reading it
    if isinstance(X, CSRDataset):
        return X.group
    return X if isinstance(X, h5py.Dataset) and X.ndim == 2 else None


def is_on_disk(adata: AnnData, layer: str | None = None) -> bool:
    """True when ``adata.X`` is a CSR or dense matrix on disk (backed ``.h5ad``, :func:`read_backed`)."""
    try:
        return _stored(adata, layer) is not None
    except Exception:  # noqa: BLE001 - any odd object simply is not on disk
        return False


def read_backed(path: str | Path) -> AnnData:
    """Open an ``.h5ad`` file or a zarr store with ``obs``/``var`` in memory and ``X`` on disk.

    ``.h5ad``: ``anndata.read_h5ad(path, backed="r")``. zarr: an AnnData whose ``X`` is
    ``anndata.io.sparse_dataset`` of the store's ``X`` group. Training and inference on
    the result (``sa.tl.vae``, ``model.get_latent``) stream ``X`` in chunks. Anything
    else (a CSV, a file named ``.h5ad`` that is not HDF5, a folder that is no zarr store)
    raises :class:`~scgen_ae.InputError` saying so; a missing path, ``FileNotFoundError``.
    """
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No file or store at {str(path)!r}.")
    if path.is_dir():  # a zarr store
        import zarr

        try:
            root = zarr.open_group(str(path), mode="r")
            missing = [name for name in ("X", "obs", "var") if name not in root]
        except Exception as err:  # zarr's errors differ between versions; all mean "not a store"
            raise v.InputError(f"{str(path)!r} is a folder but not a zarr store ({err}); sa.read_backed "
                               "opens an .h5ad file or a zarr store written by adata.write_zarr().") from None
        if missing:
            raise v.InputError(f"The zarr store {str(path)!r} has no {missing}: it was not written by "
                               "adata.write_zarr(); write the AnnData with adata.write_zarr(path) first.")
        return AnnData(X=ad.io.sparse_dataset(root["X"]), obs=ad.io.read_elem(root["obs"]),
                       var=ad.io.read_elem(root["var"]))
    v.check_h5ad_file(path, "sa.read_backed")
    return ad.read_h5ad(path, backed="r")


class OnDiskCellData:
    """Cells whose counts stay on disk; same interface as :class:`~scgen_ae.data.CellData`.

    Parameters
    ----------
    group
        The h5py / zarr group of a CSR matrix (arrays ``data``, ``indices``, ``indptr``), or a
        dense 2-D h5py dataset.
    batch
        (n_cells,) int64 batch codes.
    library
        (n_cells,) library sizes.
    columns
        Optional index of each model gene in the stored columns (-1: missing), from
        :func:`scgen_ae._validate.align_genes`.
    """

    def __init__(self, group, batch: np.ndarray, library: np.ndarray, log1p_input: bool = True,
                 columns: np.ndarray | None = None, chunk_cells: int = CHUNK_CELLS,
                 window_chunks: int = WINDOW_CHUNKS, prefetch: bool | None = None):
        if getattr(group, "ndim", None) == 2:  # dense: rows are read straight from the array
            self.dense, self.indptr = group, None
            self._n_cells, self.n_stored_genes = map(int, group.shape)
        else:
            self.dense, self.data_array, self.indices_array = None, group["data"], group["indices"]
            self.indptr = np.asarray(group["indptr"][:], dtype=np.int64)
            self._n_cells, self.n_stored_genes = len(self.indptr) - 1, int(group.attrs["shape"][1])
        self.batch, self.library, self.log1p_input = batch, library, log1p_input
        self.labels: np.ndarray | None = None  # label codes (-1: unlabelled), set like batch
        self.cat_covs: np.ndarray | None = None  # covariate codes and values, set like batch
        self.cont_covs: np.ndarray | None = None
        self.unmatched: np.ndarray | None = None  # the batches a cell may not be paired with, set like batch
        self.columns = columns
        self.chunk_size = max(int(chunk_cells), self._rows_per_compressed_chunk())  # also the unit of sharding
        self.window_cells = max(int(chunk_cells) * int(window_chunks), 4 * self.chunk_size)
        self.prefetch = PREFETCH if prefetch is None else prefetch

    def _rows_per_compressed_chunk(self) -> int:
        """Rows in one storage chunk of a compressed ``data`` array (0 if uncompressed).

        A compressed chunk is decompressed whole for any read that touches it, so reading
        fewer rows than it holds multiplies the work (zarr's 1M-value chunks at 200 values
        per cell: 20x): reads are widened to whole storage chunks then.
        """
        arr = self.dense if self.dense is not None else self.data_array
        compressed = getattr(arr, "compression", None) is not None or type(arr).__module__.startswith("zarr")
        chunks = getattr(arr, "chunks", None)
        if not compressed or not chunks or (self.dense is None and self.indptr[-1] == 0):
            return 0
        return int(chunks[0] if self.dense is not None else np.ceil(chunks[0] * self.n_cells / self.indptr[-1]))

    @property
    def n_cells(self) -> int:
        return self._n_cells

    # ------------------------------------------------------------ reading rows
    def read_span(self, start: int, stop: int, *, sorted_indices: bool = True) -> sp.csr_matrix:
        """Rows ``start:stop`` as stored (CSR float32, no stored zeros, all stored genes; see
        :func:`~scgen_ae.data.to_csr32` for ``sorted_indices``)."""
        if self.dense is not None:  # in pieces, so that only the sparse rows are held whole
            step = max(1, DENSE_READ_VALUES // max(self.n_stored_genes, 1))
            parts = [to_csr32(self.dense[a:min(a + step, stop)]) for a in range(start, stop, step)]
            return sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0]
        lo, hi = self.indptr[start], self.indptr[stop]
        X = sp.csr_matrix((self.data_array[lo:hi], self.indices_array[lo:hi], self.indptr[start:stop + 1] - lo),
                          shape=(stop - start, self.n_stored_genes))
        return to_csr32(X, sorted_indices=sorted_indices)

    def row_block(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` with the model's columns (see :func:`scgen_ae.data.iter_row_blocks`)."""
        X = self.read_span(start, stop)
        return v.aligned_matrix(X, self.columns) if self.columns is not None else X

    def read_rows(self, rows: np.ndarray, *, sorted_indices: bool = True) -> sp.csr_matrix:
        """Rows ``rows`` (any order) with the model's columns: one read per run of adjacent
        chunks, cut where a run would span more than a window of rows."""
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        chunk = srt // self.chunk_size
        block = srt // max(self.window_cells, self.chunk_size)
        breaks = np.flatnonzero((np.diff(chunk) > 1) | (np.diff(block) > 0)) + 1
        parts = []
        for run in np.split(srt, breaks):
            span = self.read_span(int(run[0]), int(run[-1]) + 1, sorted_indices=sorted_indices)
            # whole spans (inference's windows) and rows already in order are kept without a copy
            parts.append(span if np.all(np.diff(run) == 1) else span[run - run[0]])
        X = sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0]
        if np.any(np.diff(rows) < 0):
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            X = X[inverse]
        return v.aligned_matrix(X, self.columns) if self.columns is not None else X

    def in_memory(self, rows: np.ndarray) -> CellData:
        """The rows ``rows`` as an in-memory :class:`CellData` (row i = ``rows[i]``)."""
        part = lambda a: None if a is None else a[rows]  # noqa: E731
        return CellData(self.read_rows(rows), self.batch[rows], self.library[rows], self.log1p_input,
                        labels=part(self.labels), cat_covs=part(self.cat_covs), cont_covs=part(self.cont_covs),
                        unmatched=part(self.unmatched))

    # ------------------------------------------------------------ CellData's interface
    def minibatch(self, idx: np.ndarray, *, constants: bool = True) -> Minibatch:
        return self.in_memory(np.asarray(idx)).minibatch(np.arange(len(idx)), constants=constants)

    def epoch_order(self, idx: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """``idx`` in visiting order: chunks in random order, cells shuffled within each window;
        without ``rng``, ``idx`` as given (as :meth:`CellData.iterate`: applying a model to some
        cells returns their results in the order asked)."""
        if rng is None:
            return np.asarray(idx)
        idx = np.sort(np.asarray(idx))
        chunks = idx // self.chunk_size
        starts = np.flatnonzero(np.r_[True, chunks[1:] != chunks[:-1]])
        pieces = np.split(idx, starts[1:])
        order = np.concatenate([pieces[i] for i in rng.permutation(len(pieces))])
        for s in range(0, len(order), self.window_cells):
            order[s:s + self.window_cells] = rng.permutation(order[s:s + self.window_cells])
        return order

    def iterate(self, idx: np.ndarray, batch_size: int, rng: np.random.Generator | None = None,
                drop_last_if_tiny: bool = True, constants: bool = True) -> Iterator[Minibatch]:
        """Minibatches over ``idx`` (shuffled at chunk level when ``rng`` is given), cut where
        :meth:`CellData.iterate` cuts them; a window of cells is read ahead while one trains."""
        order = self.epoch_order(idx, rng)
        bounds = _minibatch_bounds(len(order), batch_size, drop_last_if_tiny)
        # windows end on minibatch boundaries, so a minibatch never straddles two reads
        per_window = max(1, self.window_cells // batch_size)
        groups = [bounds[i:i + per_window] for i in range(0, len(bounds), per_window)]
        load = lambda g: self.in_memory(order[g[0][0]:g[-1][1]])  # noqa: E731
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(load, groups[0]) if groups else None
            for i, group in enumerate(groups):
                window = pending.result()
                pending = pool.submit(load, groups[i + 1]) if self.prefetch and i + 1 < len(groups) else None
                offset = group[0][0]
                for s, e in group:
                    yield window.minibatch(np.arange(s - offset, e - offset), constants=constants)
                if pending is None and i + 1 < len(groups):
                    pending = pool.submit(load, groups[i + 1])


def _minibatch_bounds(n: int, batch_size: int, drop_last_if_tiny: bool) -> list[tuple[int, int]]:
    """(start, end) of each minibatch over ``n`` cells, as :meth:`CellData.iterate` cuts them."""
    starts = list(range(0, n, batch_size))
    if drop_last_if_tiny and len(starts) > 1 and n - starts[-1] < 3:
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


# ---------------------------------------------------------------- validation, streamed

def _scan(data: OnDiskCellData, check: Callable[[sp.csr_matrix], None]) -> tuple[np.ndarray, np.ndarray]:
    """One sequential pass: NaN / Inf and ``check`` (raising InputError) per block of rows,
    library sizes, and which genes have any count. Returns (library, gene_has_counts)."""
    library = np.zeros(data.n_cells, dtype=np.float32)  # float32 like X.sum(1) in memory: same results
    seen = np.zeros(len(data.columns) if data.columns is not None else data.n_stored_genes, dtype=bool)
    for start, stop, X in iter_row_blocks(data, SCAN_CELLS):
        try:
            v.get_matrix(AnnData(X), None)  # NaN / Inf
            check(X)
        except v.InputError as err:
            raise v.InputError(f"In cells {start}-{stop - 1} of the on-disk matrix: {err}") from None
        library[start:stop] = np.asarray(X.sum(1)).ravel()
        seen[X.indices] = True
    return library, seen


def _open(adata: AnnData, layer) -> OnDiskCellData:
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise v.InputError(f"The AnnData is empty ({adata.n_obs} cells x {adata.n_vars} genes).")
    return OnDiskCellData(_stored(adata, layer), np.zeros(adata.n_obs, np.int64), None)


def validated(adata: AnnData, layer: str | None, check: Callable[[sp.csr_matrix], None]) -> OnDiskCellData:
    """The on-disk cells after one streamed pass of checks (``check`` per block, NaN / Inf,
    no empty cells or genes), with their library sizes; batch codes are left at 0."""
    data = _open(adata, layer)
    library, seen = _scan(data, check)
    cell_zero, gene_zero = int((library == 0).sum()), int((~seen).sum())
    if cell_zero or gene_zero:
        v.refuse_empty(cell_zero, gene_zero, layer)
    data.library = library
    return data


def apply_data(adata: AnnData, var_names, batch_categories, batch_key, check: Callable[[sp.csr_matrix], None],
               pad_missing: bool, log1p_input: bool = True):
    """Out-of-core cells to apply a trained model to (see :meth:`scgen_ae.spec.DataSpec.cells`):
    genes aligned, batches coded, then one streamed pass of NaN / Inf and ``check`` per block."""
    data = _open(adata, None)
    pos, _ = v.align_genes(adata, var_names, pad_missing)
    codes, _ = v.batch_codes(adata, batch_key, batch_categories)
    if not np.array_equal(pos, np.arange(data.n_stored_genes)):
        data.columns = pos
    library, _ = _scan(data, check)
    data.batch, data.library, data.log1p_input = codes, library, log1p_input
    return data
