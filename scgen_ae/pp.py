"""Preprocessing helpers (scanpy's ``pp``)."""
from __future__ import annotations

import numpy as np
from anndata import AnnData

from . import _validate as v


def drop_empty(adata: AnnData, *, layer: str | None = None, copy: bool = False) -> AnnData | None:
    """Remove cells and genes without a single count in ``X`` / ``layers[layer]``.

    Records how many were dropped in ``adata.uns["drop_empty"]``.
    """
    v.check_target(adata, copy, "sa.pp.drop_empty")
    X = v.get_matrix(adata, layer)
    keep_cells = np.diff(X.indptr) > 0
    keep_genes = np.bincount(X.indices, minlength=X.shape[1]) > 0
    out = adata[keep_cells, keep_genes].copy()
    out.uns["drop_empty"] = {"cells_dropped": int((~keep_cells).sum()), "genes_dropped": int((~keep_genes).sum())}
    if copy:
        return out
    adata._init_as_actual(out)  # scanpy's in-place subsetting idiom
    return None


def highly_variable(adata: AnnData, *, n_top_genes: int = 2000, batch_key: str | None = None,
                    layer: str | None = None, subset: bool = True, copy: bool = False) -> AnnData | None:
    """Select highly variable genes on raw counts (scanpy's ``seurat_v3`` flavour).

    A thin wrapper that keeps counts untouched; falls back to ``seurat`` on
    log-normalised copies when scikit-misc (needed by ``seurat_v3``) is missing.
    """
    v.check_target(adata, copy, "sa.pp.highly_variable")
    import scanpy as sc

    target = adata.copy() if copy else adata
    n_top = min(n_top_genes, target.n_vars)
    try:
        sc.pp.highly_variable_genes(target, n_top_genes=n_top, flavor="seurat_v3", batch_key=batch_key,
                                    layer=layer, subset=False)
    except ImportError:
        tmp = AnnData(v.get_matrix(target, layer), obs=target.obs[[]] if batch_key is None else target.obs[[batch_key]])
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, batch_key=batch_key)
        target.var["highly_variable"] = tmp.var["highly_variable"].to_numpy()
    if subset:
        sub = target[:, target.var["highly_variable"].to_numpy()].copy()
        target._init_as_actual(sub)
    return target if copy else None


from ._markers import PBMC_MARKERS, annotate_markers, marker_scores  # noqa: E402,F401
