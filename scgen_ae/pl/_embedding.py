"""2-D embeddings of a latent space (scanpy's UMAP / t-SNE), cached in ``obsm``; scanpy's own
``obsm["X_umap"]`` is used when it was computed on the same representation."""
from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._settings import logger
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
    """(n, d) -> (n, 2) with UMAP (scanpy's ``sc.pp.neighbors`` + ``sc.tl.umap``, on a private
    AnnData so no neighbour graph of the caller is replaced) or t-SNE."""
    X = np.asarray(X, dtype=np.float32)
    if method == "umap":
        import scanpy as sc

        private = AnnData(obsm={"X_rep": X}, shape=(X.shape[0], 0))
        sc.pp.neighbors(private, use_rep="X_rep", n_neighbors=min(n_neighbors, X.shape[0] - 1), random_state=seed)
        sc.tl.umap(private, min_dist=min_dist, random_state=seed)
        return np.asarray(private.obsm["X_umap"])
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(perplexity, (X.shape[0] - 1) / 3)
        return TSNE(perplexity=perplexity, random_state=seed, init="pca").fit_transform(X)
    raise InputError(f"method={method!r}; choose 'umap' or 'tsne'.")


def scanpy_umap_of(adata: AnnData, basis: str) -> bool:
    """Whether ``obsm["X_umap"]`` is scanpy's UMAP of ``obsm[basis]``: ``sc.tl.umap`` after
    ``sc.pp.neighbors(adata, use_rep=basis)`` (the default neighbours key)."""
    if "X_umap" not in adata.obsm or "umap" not in adata.uns:
        return False
    params = adata.uns.get("neighbors", {}).get("params", {})
    return params.get("use_rep") == basis and np.shape(adata.obsm["X_umap"]) == (adata.n_obs, 2)


def cached_embedding(adata: AnnData, basis: str, method: str, recompute: bool = False, **kwargs) -> np.ndarray:
    """Return the 2-D ``method`` embedding of ``obsm[basis]``, computing only what is missing.

    For UMAP, scanpy's ``obsm["X_umap"]`` when it was computed on ``basis`` (see
    :func:`scanpy_umap_of`). Else ``obsm[f"{basis}_{method}"]``, computed and stored when
    absent (logged at ``sa.settings.verbosity >= 2``); the cache remembers the source basis'
    shape and the parameters in ``uns["embeddings"]``, and is recomputed when they no longer
    match.
    """
    check_embedding(adata, basis, method)
    if method == "umap" and not recompute and scanpy_umap_of(adata, basis):
        logger.debug("drawing scanpy's obsm['X_umap'] (sc.tl.umap on use_rep=%r)", basis)
        return np.asarray(adata.obsm["X_umap"])
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
    how = "sc.pp.neighbors + sc.tl.umap" if method == "umap" else "t-SNE"
    logger.info("computed the %s of obsm[%r] (%s) and stored it in obsm[%r]", method.upper(), basis, how, key)
    return emb
