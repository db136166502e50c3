"""kNN label transfer from a labelled reference to query cells in a shared latent space."""
from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from sklearn.neighbors import NearestNeighbors

from .. import _validate as v
from ._common import params_record, write_results


def _latent(adata: AnnData, basis: str, who: str) -> np.ndarray:
    if not isinstance(adata, AnnData):
        raise v.InputError(f"{who} must be an AnnData, got {type(adata).__name__}.")
    if basis not in adata.obsm:
        raise v.InputError(
            f"{who}.obsm has no {basis!r} (keys: {list(adata.obsm.keys()) or 'none'}). Embed both data sets with "
            "the same model first: model.map_query(query, ...) writes it for the query, sa.tl.vae for the reference.")
    X = np.asarray(adata.obsm[basis], dtype=np.float64)
    if not np.all(np.isfinite(X)):
        raise v.InputError(f"{who}.obsm[{basis!r}] contains NaN/Inf values.")
    return X


def transfer_labels(
    adata: AnnData,
    *,
    reference: AnnData,
    label_key: str,
    basis: str = "X_vae",
    n_neighbors: int = 15,
    key_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Predict ``reference.obs[label_key]`` for the cells of ``adata`` from their neighbours.

    A weighted kNN classifier in the joint latent space (scArches' recipe): the
    ``n_neighbors`` nearest labelled reference cells of each query cell vote with
    Gaussian weights ``exp(-d^2 / (2 s^2))``, where ``s`` is the cell's own median
    neighbour distance, so a cell in a dense and in a sparse region are treated alike.
    The uncertainty is one minus the winning label's share of the weight: 0 when all
    neighbours agree, close to ``1 - 1/n_labels`` when they are split evenly. High
    uncertainty flags cells whose type may be absent from the reference.

    Parameters
    ----------
    adata
        The query cells, with the shared latent space in ``obsm[basis]`` (n_query, d).
    reference
        Labelled cells embedded by the same model, ``obsm[basis]`` (n_ref, d). Reference
        cells with a missing label are ignored.
    label_key
        ``reference.obs`` column with the labels.
    basis
        ``obsm`` key of the latent space in both objects.
    n_neighbors
        Neighbours per query cell (at most the number of labelled reference cells).
    key_added
        Name of the predicted-label column; default ``f"{label_key}_transferred"``. ``label_key``
        itself is refused: it would replace the labels read from (and a ground-truth
        ``label_key`` column the query may have). Replacing another existing column warns.
    copy
        Return an annotated copy instead of writing into ``adata``.

    Sets
    ----
    - ``adata.obs[key_added]``: predicted label (categorical, the reference's categories).
    - ``adata.obs[f"{key_added}_uncertainty"]``: (n_query,) in [0, 1).
    - ``adata.obsm[f"{key_added}_probabilities"]``: (n_query, n_labels) weight shares,
      columns in the order of ``adata.uns[key_added]["labels"]``.
    - ``adata.uns[key_added]``: ``params`` and ``labels``.
    """
    v.check_target(adata, copy, "sa.tl.transfer_labels")
    key_added = key_added or f"{label_key}_transferred"
    if key_added in (label_key, f"{label_key}_uncertainty"):
        raise v.InputError(
            f"key_added={key_added!r} would replace the label column {label_key!r} that the labels are read from "
            f"(and the query's own {label_key!r}, if it has one, the ground truth to compare with). Pass another "
            f"key_added, e.g. the default {label_key + '_transferred'!r}."
        )
    query = _latent(adata, basis, "adata")
    ref = _latent(reference, basis, "reference")
    if query.shape[1] != ref.shape[1]:
        raise v.InputError(f"adata.obsm[{basis!r}] has {query.shape[1]} dimensions but reference.obsm[{basis!r}] has "
                           f"{ref.shape[1]}: embed both with the same model.")
    if label_key not in reference.obs:
        cols = ", ".join(map(repr, reference.obs.columns[:20])) or "none"
        raise v.InputError(f"label_key={label_key!r} is not a column of reference.obs (columns: {cols}).")
    labels = reference.obs[label_key]
    known = ~labels.isna().to_numpy()
    if not known.any():
        raise v.InputError(f"reference.obs[{label_key!r}] has no labelled cells.")
    if not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be a positive integer, got {n_neighbors!r}.")
    codes, names = pd.factorize(labels[known].astype(str), sort=True)
    k = int(min(n_neighbors, known.sum()))

    dist, idx = NearestNeighbors(n_neighbors=k).fit(ref[known]).kneighbors(query)
    scale = np.median(dist, axis=1, keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    weights = np.exp(-0.5 * (dist / scale) ** 2)
    proba = np.zeros((len(query), len(names)))
    np.add.at(proba, (np.repeat(np.arange(len(query)), k), codes[idx].ravel()), weights.ravel())
    proba /= proba.sum(1, keepdims=True)
    best = proba.argmax(1)

    target = adata.copy() if copy else adata
    params = params_record(label_key=label_key, basis=basis, n_neighbors=k)
    uns = {key_added: {"params": params, "labels": np.asarray(names, dtype=str)}}
    obs = {key_added: pd.Categorical.from_codes(best, categories=list(names)),
           f"{key_added}_uncertainty": (1.0 - proba.max(1)).astype(np.float32)}
    write_results(target, obs=obs, obsm={f"{key_added}_probabilities": proba.astype(np.float32)}, uns=uns)
    return target if copy else None
