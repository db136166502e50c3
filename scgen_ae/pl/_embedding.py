"""2-D embeddings of a latent space (umap-learn / t-SNE), cached in ``obsm``."""
from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._validate import InputError, MissingKeyError

METHODS = ("umap", "tsne")


def check_embedding(adata: AnnData, basis: str, method: str) -> None:
    """Refuse an unknown ``basis`` or ``method`` before anything is computed or cached."""
    if method not in METHODS:
        raise InputError(f"method={method!r}; choose 'umap' or 'tsne'.")
    if basis not in adata.obsm:
        raise MissingKeyError(f"basis={basis!r} is not in adata.obsm (available: {list(adata.obsm.keys())}).")


def embed_2d(X: np.ndarray, method: str, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.3,
             perplexity: float = 30.0) -> np.ndarray:
    """(n, d) -> (n, 2) with UMAP or t-SNE."""
    X = np.asarray(X, dtype=np.float32)
    if method == "umap":
        import umap

        n_neighbors = min(n_neighbors, X.shape[0] - 1)
        return umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=seed,
                         n_jobs=1).fit_transform(X)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(perplexity, (X.shape[0] - 1) / 3)
        return TSNE(perplexity=perplexity, random_state=seed, init="pca").fit_transform(X)
    raise InputError(f"method={method!r}; choose 'umap' or 'tsne'.")


def cached_embedding(adata: AnnData, basis: str, method: str, recompute: bool = False, **kwargs) -> np.ndarray:
    """Return ``obsm[f"{basis}_{method}"]``, computing and storing it when absent.

    The cache remembers the source basis' shape and the parameters in
    ``uns["embeddings"]``, and is recomputed when they no longer match.
    """
    check_embedding(adata, basis, method)
    key = f"{basis}_{method}"
    src = np.asarray(adata.obsm[basis])
    record = adata.uns.get("embeddings", {}).get(key)
    signature = {"basis": basis, "method": method, "n_dims": int(src.shape[1]),
                 "checksum": float(np.round(np.abs(src).sum(), 3)),
                 **{k: v for k, v in kwargs.items() if v is not None}}
    if not recompute and key in adata.obsm and record == signature:
        return adata.obsm[key]
    emb = embed_2d(src, method, **kwargs)
    adata.obsm[key] = emb
    adata.uns.setdefault("embeddings", {})[key] = signature
    return emb
