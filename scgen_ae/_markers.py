"""Coarse cell-type labels from canonical marker genes (for data shipped without labels).

The shared PBMC files (Kang IFN-b, the 10x chemistries) carry no annotation, yet
scIB's bio-conservation metrics and scGen-style perturbation prediction need cell
types. This is the usual tutorial recipe, made reproducible: log-normalise a private
copy, cluster finely, and give each cluster the marker set with the highest mean score.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from . import _validate as v

#: Canonical PBMC markers (Seurat's PBMC tutorial and the scGen / Kang et al. figures).
#: Keys are the label names written to ``obs``.
PBMC_MARKERS: dict[str, list[str]] = {
    "CD4_T": ["CD3E", "CD3D", "IL7R", "CD4", "LDHB"],
    "CD8_T": ["CD3E", "CD3D", "CD8A", "CD8B"],
    "NK": ["NKG7", "GNLY", "GZMB", "KLRD1"],
    "B": ["MS4A1", "CD79A", "CD79B", "CD19"],
    "CD14_mono": ["CD14", "LYZ", "S100A8", "S100A9"],
    "FCGR3A_mono": ["FCGR3A", "MS4A7", "LST1"],
    "DC": ["FCER1A", "CST3", "CLEC10A"],
    "Megakaryocyte": ["PPBP", "PF4"],
}


def marker_scores(X_lognorm, var_names: Sequence[str], markers: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Per-cell score of each marker set: mean over its genes of the gene's z-score.

    ``X_lognorm`` is (n_cells, n_genes) log-normalised expression (dense or sparse).
    Marker genes absent from ``var_names`` are skipped; a set with none present scores NaN.
    """
    index = pd.Index([str(g) for g in var_names])
    X = X_lognorm.toarray() if hasattr(X_lognorm, "toarray") else np.asarray(X_lognorm)
    scores = {}
    for label, genes in markers.items():
        pos = index.get_indexer([g for g in genes if g in index])
        if len(pos) == 0:
            scores[label] = np.full(X.shape[0], np.nan)
            continue
        sub = X[:, pos].astype(np.float64)
        sd = sub.std(0)
        z = (sub - sub.mean(0)) / np.where(sd > 0, sd, 1.0)
        scores[label] = z.mean(1)
    return pd.DataFrame(scores)


def _clusters(lognorm: AnnData, n_clusters: int, seed: int) -> np.ndarray:
    """KMeans on 30 PCs of the 2,000 most variable genes of log-normalised data."""
    import scanpy as sc
    from sklearn.cluster import KMeans

    hvg = sc.pp.highly_variable_genes(lognorm, n_top_genes=min(2000, lognorm.n_vars), inplace=False)
    keep = hvg["highly_variable"].to_numpy()
    n_comps = int(min(30, lognorm.n_obs - 1, int(keep.sum()) - 1))
    pcs = sc.pp.pca(lognorm[:, keep].X, n_comps=n_comps, random_state=seed)
    return KMeans(min(n_clusters, lognorm.n_obs), n_init=5, random_state=seed).fit_predict(pcs)


def annotate_markers(
    adata: AnnData,
    *,
    markers: Mapping[str, Sequence[str]] | None = None,
    layer: str | None = None,
    groupby: str | None = None,
    n_clusters: int = 30,
    key_added: str = "cell_type",
    seed: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Label cells with the marker set that scores highest in their cluster.

    Counts are normalised to 1e4 per cell and log1p-transformed on a private copy,
    cells are clustered with KMeans (``n_clusters``) on 30 principal components of the
    2,000 most variable genes, and every cell of a cluster gets the label whose marker
    score (mean z-score of its genes, :func:`marker_scores`) is highest on average in
    that cluster. Clusters, not cells, are labelled: single-cell marker scores are noisy.

    Parameters
    ----------
    adata
        Cells x genes with raw counts in ``X`` or ``layers[layer]``.
    markers
        Label -> marker genes; default :data:`PBMC_MARKERS` (coarse PBMC types).
    layer
        Layer with the counts; None uses ``X``.
    groupby
        ``obs`` column (e.g. the condition of a perturbation experiment): z-score and
        cluster within each of its groups, so that a global shift such as an interferon
        response neither moves cells between labels nor forms clusters of its own.
    n_clusters
        KMeans clusters (per group); more resolves rare types (DC, megakaryocytes) better.
    key_added
        ``obs`` column for the labels (categorical).
    seed
        Seed of the PCA and KMeans.
    copy
        Return an annotated copy instead of writing into ``adata``.

    Sets
    ----
    - ``adata.obs[key_added]``: the labels.
    - ``adata.obsm[f"{key_added}_scores"]``: (n_cells, n_labels) marker scores.
    - ``adata.uns[key_added]``: ``{"params": ..., "markers": {label: genes used},
      "cluster_labels": label of each KMeans cluster}``.
    """
    v.check_target(adata, copy, "sa.pp.annotate_markers")
    import scanpy as sc

    markers = dict(PBMC_MARKERS if markers is None else markers)
    X = v.get_matrix(adata, layer)
    v.check_counts(X, layer, "counts", needs="marker annotation (which normalises counts)", otherwise=None)
    present = {k: [g for g in genes if g in adata.var_names] for k, genes in markers.items()}
    if not any(present.values()):
        raise v.InputError(f"None of the marker genes are in adata.var_names (e.g. {next(iter(markers.values()))}); "
                           "are var_names gene symbols?")
    tmp = AnnData(X.copy())
    tmp.var_names = adata.var_names.astype(str)
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    used = {k: g for k, g in present.items() if g}
    if groupby is not None:
        groups = v.batch_codes(adata, groupby)[0]
    else:
        groups = np.zeros(adata.n_obs, dtype=np.int64)
    scores = pd.DataFrame(index=np.arange(adata.n_obs), columns=list(used), dtype=np.float64)
    labels = np.empty(adata.n_obs, dtype=object)
    cluster_labels = []
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        part = tmp[rows].copy()
        part_scores = marker_scores(part.X, part.var_names, used)
        clusters = _clusters(part, n_clusters, seed)
        best = part_scores.groupby(clusters).mean().idxmax(axis=1)
        scores.iloc[rows] = part_scores.to_numpy()
        labels[rows] = best.loc[clusters].to_numpy()
        cluster_labels.extend(best.astype(str).tolist())
    cluster_labels = pd.Series(cluster_labels)
    labels = pd.Categorical(labels, categories=list(used)).remove_unused_categories()

    from .tl._common import write_results  # tl imports pp: import here

    target = adata.copy() if copy else adata
    record = {
        "params": {"layer": str(layer), "groupby": str(groupby), "n_clusters": int(n_clusters), "seed": int(seed)},
        "markers": {k: list(g) for k, g in present.items() if g},
        "cluster_labels": cluster_labels.astype(str).to_numpy(),
    }
    write_results(target, obs={key_added: labels}, obsm={f"{key_added}_scores": scores.to_numpy(np.float32)},
                  uns={key_added: record})
    return target if copy else None
