"""Light-weight integration metrics: pure functions on arrays, plus a thin AnnData layer.

These are quick checks used by tests, the CLI summary and the tutorials, with no extra
dependency. None of them is one of scIB's metrics, and their names say so: scIB's (iLISI,
KMeans ARI, ...) come from scib-metrics through :func:`scgen_ae.tl.score_integration`.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from anndata import AnnData
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.neighbors import NearestNeighbors


def _knn(X: np.ndarray, k: int) -> np.ndarray:
    k = min(k, X.shape[0] - 1)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)
    return idx[:, 1:]


def _neighbour_proportions(X, labels, k):
    codes, uniques = pd.factorize(np.asarray(labels))
    nb = codes[_knn(np.asarray(X, dtype=np.float32), k)]
    props = np.stack([(nb == c).mean(1) for c in range(len(uniques))], axis=1)
    return props, len(uniques)


def batch_entropy(X: np.ndarray, batches, k: int = 30) -> float:
    """Mean entropy of the batch labels among each cell's ``k`` nearest neighbours,
    divided by log(n_batches): 0 = batches apart, 1 = perfectly mixed."""
    p, n = _neighbour_proportions(X, batches, k)
    if n < 2:
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return float(h.mean() / np.log(n))


def batch_simpson(X: np.ndarray, batches, k: int = 30) -> float:
    """Inverse Simpson index of the batches among each cell's ``k`` nearest neighbours
    (equal weights), scaled to [0, 1] as (index - 1) / (B - 1) and averaged over cells:
    0 = batches apart, 1 = perfectly mixed.

    Not scIB's iLISI, which weights 90 neighbours by a Gaussian kernel of perplexity 30 and
    takes the median over cells, so the two differ on the same embedding; that one is the
    "iLISI" column of :func:`scgen_ae.tl.score_integration` (needs scib-metrics).
    """
    p, n = _neighbour_proportions(X, batches, k)
    if n < 2:
        return float("nan")
    inv_simpson = 1.0 / (p**2).sum(1)
    return float(((inv_simpson - 1.0) / (n - 1)).mean())


def ilisi(X: np.ndarray, batches, k: int = 30) -> float:
    """Deprecated name of :func:`batch_simpson`: it is not scIB's iLISI, whose values differ."""
    warnings.warn("sa.metrics.ilisi is now sa.metrics.batch_simpson (it is not scIB's iLISI, which "
                  "sa.tl.score_integration reports); the old name will be removed.", FutureWarning, stacklevel=2)
    return batch_simpson(X, batches, k)


def clustering_ari(X: np.ndarray, labels, n_clusters: int | None = None, seed: int = 0) -> float:
    """ARI between a scikit-learn KMeans clustering (``n_clusters`` = number of labels,
    10 starts) and ``labels``. scIB's "KMeans ARI" clusters with scib-metrics' own KMeans,
    whose result differs."""
    labels = np.asarray(labels)
    n_clusters = n_clusters or len(np.unique(labels))
    pred = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(np.asarray(X, dtype=np.float64))
    return float(adjusted_rand_score(labels, pred))


def label_silhouette(X: np.ndarray, labels) -> float:
    """Silhouette width of ``labels`` (euclidean), rescaled to [0, 1] as (width + 1) / 2: the
    definition of scIB's "Silhouette label", computed with scikit-learn in float64."""
    return float((silhouette_score(X, np.asarray(labels)) + 1) / 2)


def summary(adata: AnnData, bases, *, batch_key: str, label_key: str | None = None, k: int = 30) -> pd.DataFrame:
    """One row per ``obsm`` basis: ``batch_entropy``, ``batch_simpson`` and, with labels,
    ``ari`` (:func:`clustering_ari`) and ``label_silhouette``: the quick metrics of this
    module, not scIB's (see :func:`scgen_ae.tl.score_integration`)."""
    rows = {}
    for basis in [bases] if isinstance(bases, str) else bases:
        X = adata.obsm[basis]
        row = {"batch_entropy": batch_entropy(X, adata.obs[batch_key], k),
               "batch_simpson": batch_simpson(X, adata.obs[batch_key], k)}
        if label_key is not None:
            row["ari"] = clustering_ari(X, adata.obs[label_key])
            row["label_silhouette"] = label_silhouette(X, adata.obs[label_key])
        rows[basis] = row
    return pd.DataFrame(rows).T
