"""Batch removal by latent arithmetic (scGen), label-aware or label-free (mutual nearest neighbours)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from sklearn.preprocessing import normalize

from .. import _validate as v
from ..data import iter_row_blocks
from ..models.vae import INPUT_PAIR_BOUND, MIN_CORRECTION_WEIGHT
from ._common import params_record, write_results
from ._predict import _check_model, _latents, _obs_values


#: squared width of the Gaussian that smooths the pairs' vectors: this times a cell's squared
#: distance to its ``n_neighbors``-th neighbour in its batch (z)
SHIFT_BANDWIDTH = 2.0


def _unit_input(data) -> sp.csr_matrix:
    """The model's input rows (log1p of counts, or the values) scaled to unit length: distances
    between them are the cosine view of the input in which pairs are checked."""
    blocks = []
    for _, _, X in iter_row_blocks(data):
        X = X.astype(np.float64)
        if data.log1p_input:
            X.data = np.log1p(X.data)
        blocks.append(X)
    return normalize(sp.vstack(blocks).tocsr())


def _mutual(a, b, k: int) -> set:
    """Pairs (i in a, j in b) that are among each other's ``k`` nearest neighbours."""
    from sklearn.neighbors import NearestNeighbors

    near_b = NearestNeighbors(n_neighbors=min(k, b.shape[0])).fit(b).kneighbors(a, return_distance=False)
    near_a = NearestNeighbors(n_neighbors=min(k, a.shape[0])).fit(a).kneighbors(b, return_distance=False)
    of_b = [set(r) for r in near_a]
    return {(i, j) for i in range(a.shape[0]) for j in near_b[i] if i in of_b[j]}


def _kth_sq(a, k: int) -> np.ndarray:
    """Squared distance of each row of ``a`` to its ``k``-th nearest other row."""
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=min(k + 1, a.shape[0])).fit(a).kneighbors(a)
    return dist[:, -1] ** 2


def _mnn_shift(z_move, z_ref, x_move, x_ref, k: int, n_smooth: int) -> np.ndarray | None:
    """Per-cell shift of ``z_move`` towards ``z_ref`` from mutual nearest neighbours.

    A pair (i in move, j in ref) must be mutual ``k`` nearest neighbours in ``z`` and in the
    input (``x``: unit rows), and no farther apart in the input than either cell is from its
    ``k``-th neighbour in its own batch (the VAE's rule, ``INPUT_PAIR_BOUND``): in ``z`` alone
    a type one batch lacks pairs with the nearest other type. Each pair gives the vector
    z_ref[j] - z_move[i]; every cell gets the Gaussian-weighted mean of the vectors of its
    ``n_smooth`` nearest paired cells, and a cell far from all of them (weights summing to
    less than ``MIN_CORRECTION_WEIGHT``) is not moved. None: no pairs.
    """
    from sklearn.neighbors import NearestNeighbors

    pairs = _mutual(z_move, z_ref, k) & _mutual(x_move, x_ref, k)
    if pairs:
        i_idx, j_idx = np.asarray(sorted(pairs)).T
        gap = 2.0 - 2.0 * np.asarray(x_move[i_idx].multiply(x_ref[j_idx]).sum(1)).ravel()
        keep = gap <= INPUT_PAIR_BOUND * np.maximum(_kth_sq(x_move, k)[i_idx], _kth_sq(x_ref, k)[j_idx])
        i_idx, j_idx = i_idx[keep], j_idx[keep]
    if not pairs or len(i_idx) == 0:
        return None
    anchors = np.unique(i_idx)
    vectors = np.stack([(z_ref[j_idx[i_idx == a]].mean(0) - z_move[a]) for a in anchors])
    dist, near = NearestNeighbors(n_neighbors=min(n_smooth, len(anchors))).fit(z_move[anchors]).kneighbors(z_move)
    width2 = SHIFT_BANDWIDTH * np.maximum(_kth_sq(z_move, k), 1e-12)
    weight = np.exp(-0.5 * dist**2 / width2[:, None])
    total = weight.sum(1, keepdims=True)
    shift = (weight[:, :, None] * vectors[near]).sum(1) / np.maximum(total, 1e-300)
    shift[total[:, 0] < MIN_CORRECTION_WEIGHT] = 0.0
    return shift


def remove_batch(
    model,
    adata: AnnData,
    *,
    batch_key: str,
    cell_type_key: str | None = None,
    n_neighbors: int = 10,
    n_smooth: int = 30,
    layer="model",
    key_added: str = "X_vae_corrected",
    layer_added: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Remove batch effects by moving each batch's cells in the latent space (scGen).

    Batches are merged one at a time, largest first; each new batch is moved onto the
    cells merged so far.

    - With ``cell_type_key`` (scGen's label-aware variant): within each cell type, the
      batch moves by the difference of the two latent means.
    - Without labels: the shift is local, from mutual nearest neighbours between the
      batch and the merged cells (as fastMNN, on the VAE's z): a pair must be mutual
      neighbours in z and in the input (cosine of log1p counts), and close in the input
      compared with each cell's own batch, the rule ``tl.vae``'s alignment uses. Every pair
      gives a vector, and every cell moves by the Gaussian-weighted mean of the vectors of
      its ``n_smooth`` nearest paired cells; a cell far from every paired cell (a type the
      merged cells lack) stays where it is. If no pairs exist, the batch is left where it
      is (with a warning), not moved by the difference of means, which would pull its
      types onto the merged ones. The input view reads the cells' values into
      memory once (sparse).

    Meant for a model trained with ``batch_key=None`` (scGen's setting), whose z still
    holds the batch effect; it works on a conditional model too.

    Parameters
    ----------
    model
        A trained :class:`~scgen_ae.VAE`.
    adata
        Cells with the model's genes and ``obs[batch_key]``.
    batch_key
        ``obs`` column of the batches to merge.
    cell_type_key
        Optional ``obs`` column of cell types (label-aware variant).
    n_neighbors, n_smooth
        kNN size for the MNN pairs (default 10: with 20, pairs formed between a type one
        batch lacks and the nearest other type, BENCHMARKS.md); paired cells averaged per
        cell (label-free only).
    layer
        Defaults to the model's training layer.
    key_added
        ``obsm`` key of the corrected latent space.
    layer_added
        If given, also decode the corrected latents into ``layers[layer_added]`` (n_cells,
        n_genes): expected counts at each cell's library, or log values for gaussian.
        Needs ``adata`` to have exactly the model's genes in order.
    copy
        Return a corrected copy instead of writing into ``adata``.

    Sets
    ----
    - ``adata.obsm[key_added]``: (n_cells, n_latent) corrected latents.
    - ``adata.layers[layer_added]`` if requested.
    - ``adata.uns[key_added]``: ``params`` and ``merge_order`` (batches, in order merged).
    """
    v.check_target(adata, copy, "sa.tl.remove_batch")
    _check_model(model)
    batches = _obs_values(adata, batch_key, "batch_key")
    labels = _obs_values(adata, cell_type_key, "cell_type_key") if cell_type_key is not None else None
    if layer_added is not None and list(adata.var_names) != model.var_names:
        raise v.InputError(f"layer_added={layer_added!r} needs adata to have exactly the model's "
                           f"{len(model.var_names)} genes in the model's order: subset with adata[:, model.var_names].")
    data, z = _latents(model, adata, layer, "model")
    order = pd.Series(batches).value_counts(sort=True).index.tolist()
    corrected = z.astype(np.float64).copy()
    merged = batches == order[0]
    unit = _unit_input(data) if labels is None and len(order) > 1 else None
    for b in order[1:]:
        rows = batches == b
        if labels is None:
            shift = _mnn_shift(corrected[rows], corrected[merged], unit[rows], unit[merged], n_neighbors, n_smooth)
            if shift is None:  # a mean shift would pull whatever the batch holds onto the merged types
                warnings.warn(f"No cell of batch {b!r} pairs with the merged cells (mutual nearest neighbours in "
                              "z and in the input): it shares no cell type with them, or its batch effect is too "
                              "large to find pairs. It is left where it is; pass cell_type_key= to shift it by "
                              "labels.", UserWarning, stacklevel=2)
                shift = 0.0
            corrected[rows] += shift
        else:
            for t in np.unique(labels[rows]):
                here, there = rows & (labels == t), merged & (labels == t)
                if there.any():  # a type absent from the merged cells stays where it is
                    corrected[here] += corrected[there].mean(0) - corrected[here].mean(0)
        merged |= rows
    corrected = corrected.astype(np.float32)
    layers = {layer_added: model._decode_latent(data, corrected, np.arange(adata.n_obs))} if layer_added else None
    target = adata.copy() if copy else adata
    params = params_record(batch_key=batch_key, cell_type_key=cell_type_key, n_neighbors=n_neighbors,
                           n_smooth=n_smooth, layer=model.layer if layer == "model" else layer)
    write_results(target, obsm={key_added: corrected}, layers=layers,
                  uns={key_added: {"params": params, "merge_order": np.asarray(order, dtype=str)}})
    return target if copy else None
