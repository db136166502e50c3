#!/usr/bin/env python
"""Write the scale benchmark data sets once: 10^5 / 10^6 cells x 2,000 genes resampled
from real cells, as an uncompressed ``.h5ad`` and a ``.zarr`` store (both CSR, written in
blocks so that this script's memory does not grow with the number of cells either).

Source: ``pbmc_10x_chemistries`` (2,860 cells, 3 chemistries), 2,000 seurat_v3 HVGs
with ``batch_key="batch"``. Each new cell is drawn batch by batch (a batch keeps its
share of the cells, and the file is written sorted by batch, as concatenated atlases
usually are) from a real cell of that batch, and its counts are thinned with a
binomial of a per-cell probability drawn from U(0.5, 1): new library sizes, new zero
patterns, the same gene-gene structure and batch effects.

    python benchmarks/make_scale_data.py --cells 100000 1000000 --out bench_out/scale
    python benchmarks/make_scale_data.py --cells 200000 --formats h5ad h5ad-dense --out /tmp/scale

``h5ad-dense`` writes the same cells with a dense ``X`` (``pbmc_<n>_dense.h5ad``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

BLOCK = 50_000


def source_cells():
    import scanpy as sc

    import scgen_ae as sa

    adata = sa.datasets.load("pbmc_10x_chemistries")
    sc.pp.highly_variable_genes(adata, flavor="seurat_v3", batch_key="batch", n_top_genes=2000, subset=True)
    sa.pp.drop_empty(adata)
    return adata


def resampled_block(X: sp.csr_matrix, rows: np.ndarray, rng: np.random.Generator) -> sp.csr_matrix:
    """Rows ``rows`` of ``X``, each thinned by a binomial with p ~ U(0.5, 1); cells left empty keep p = 1."""
    sub = X[rows]
    p = np.repeat(rng.uniform(0.5, 1.0, len(rows)), np.diff(sub.indptr))
    thinned = rng.binomial(sub.data.astype(np.int64), p).astype(np.float32)
    empty = np.bincount(np.repeat(np.arange(len(rows)), np.diff(sub.indptr)), weights=thinned,
                        minlength=len(rows)) == 0
    keep_orig = np.repeat(empty, np.diff(sub.indptr))
    thinned[keep_orig] = sub.data[keep_orig]
    out = sp.csr_matrix((thinned, sub.indices, sub.indptr), shape=sub.shape)
    out.eliminate_zeros()
    return out


class CSRAppender:
    """Append CSR row blocks to ``<group>/X`` of an h5ad (h5py) or zarr store in anndata's encoding."""

    def __init__(self, root, n_cells: int, n_genes: int, zarr_store: bool):
        self.zarr_store = zarr_store
        g = root.create_group("X")
        g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": [n_cells, n_genes]})
        chunk = 1 << 20
        if zarr_store:
            self.data = g.create_array("data", shape=(0,), chunks=(chunk,), dtype="float32")
            self.indices = g.create_array("indices", shape=(0,), chunks=(chunk,), dtype="int32")
            self.indptr = g.create_array("indptr", shape=(n_cells + 1,), chunks=(chunk,), dtype="int64")
        else:
            self.data = g.create_dataset("data", shape=(0,), maxshape=(None,), chunks=(chunk,), dtype="float32")
            self.indices = g.create_dataset("indices", shape=(0,), maxshape=(None,), chunks=(chunk,), dtype="int32")
            self.indptr = g.create_dataset("indptr", shape=(n_cells + 1,), dtype="int64")
        self.nnz, self.row = 0, 0
        self.indptr[0:1] = np.zeros(1, np.int64)

    def append(self, block: sp.csr_matrix) -> None:
        n, nnz = block.shape[0], block.nnz
        for arr, values in ((self.data, block.data), (self.indices, block.indices.astype(np.int32))):
            arr.resize((self.nnz + nnz,))
            arr[self.nnz:self.nnz + nnz] = values
        self.indptr[self.row + 1:self.row + n + 1] = block.indptr[1:].astype(np.int64) + self.nnz
        self.nnz += nnz
        self.row += n


class DenseAppender:
    """Append row blocks to a dense ``X`` of an h5ad (h5py) in anndata's encoding."""

    def __init__(self, root, n_cells: int, n_genes: int):
        self.X = root.create_dataset("X", shape=(n_cells, n_genes), dtype="float32")
        self.X.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        self.row = 0

    def append(self, block: sp.csr_matrix) -> None:
        self.X[self.row:self.row + block.shape[0]] = block.toarray()
        self.row += block.shape[0]


def write(path: Path, src, n_cells: int, seed: int, zarr_store: bool, dense: bool = False) -> None:
    import anndata as ad

    rng = np.random.default_rng(seed)
    codes = src.obs["batch"].cat.codes.to_numpy()
    cats = list(src.obs["batch"].cat.categories)
    share = np.bincount(codes, minlength=len(cats)) / len(codes)
    per_batch = np.floor(share * n_cells).astype(int)
    per_batch[-1] += n_cells - per_batch.sum()
    batch = np.repeat(np.arange(len(cats)), per_batch)  # sorted by batch, like a concatenated atlas
    X = src.X.tocsr().astype(np.float32)
    if zarr_store:
        import zarr

        root = zarr.open_group(str(path), mode="w", zarr_format=3)
    else:
        import h5py

        root = h5py.File(path, "w")
    root.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    obs = pd.DataFrame({"batch": pd.Categorical.from_codes(batch, cats)}, index=[f"cell{i}" for i in range(n_cells)])
    ad.io.write_elem(root, "obs", obs)
    ad.io.write_elem(root, "var", src.var[[]])
    for key in ("obsm", "varm", "layers", "obsp", "varp"):
        ad.io.write_elem(root, key, {})
    ad.io.write_elem(root, "uns", {"source": f"make_scale_data.py: pbmc_10x_chemistries resampled, seed {seed}"})
    out = DenseAppender(root, n_cells, X.shape[1]) if dense else CSRAppender(root, n_cells, X.shape[1], zarr_store)
    pools = [np.flatnonzero(codes == b) for b in range(len(cats))]
    for start in range(0, n_cells, BLOCK):
        b_rows = batch[start:start + BLOCK]
        rows = np.empty(len(b_rows), dtype=np.int64)
        for b, pool in enumerate(pools):
            sel = b_rows == b
            rows[sel] = rng.choice(pool, int(sel.sum()))
        out.append(resampled_block(X, rows, rng))
    if not zarr_store:
        root.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--out", type=Path, default=Path("bench_out/scale"))
    p.add_argument("--formats", nargs="+", default=["h5ad", "zarr"], choices=["h5ad", "zarr", "h5ad-dense"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    src = source_cells()
    for n in args.cells:
        for fmt in args.formats:
            path = args.out / (f"pbmc_{n}_dense.h5ad" if fmt == "h5ad-dense" else f"pbmc_{n}.{fmt}")
            t = time.perf_counter()
            write(path, src, n, args.seed, fmt == "zarr", dense=fmt == "h5ad-dense")
            print(f"wrote {path} ({n} x {src.n_vars}) in {time.perf_counter() - t:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
