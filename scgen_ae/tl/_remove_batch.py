"""Batch removal by latent arithmetic (scGen), label-aware or label-free (mutual nearest neighbours)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate as v
from ._common import params_record, write_results
from ._predict import _check_model, _decode, _latents, _obs_values


def _mnn_shift(z_move: np.ndarray, z_ref: np.ndarray, k: int, n_smooth: int) -> np.ndarray | None:
    """Per-cell shift of ``z_move`` towards ``z_ref`` from mutual nearest neighbours.

    Each MNN pair (i in move, j in ref) gives the vector z_ref[j] - z_move[i]; every
    cell of ``z_move`` gets the Gaussian-weighted mean of the vectors of its
    ``n_smooth`` nearest paired cells (scale: its median distance to them), so the
    correction varies smoothly across cell states without any label. None: no pairs.
    """
    from sklearn.neighbors import NearestNeighbors

    k_mr, k_rm = min(k, len(z_ref)), min(k, len(z_move))
    nn_ref = NearestNeighbors(n_neighbors=k_mr).fit(z_ref).kneighbors(z_move, return_distance=False)
    nn_move = NearestNeighbors(n_neighbors=k_rm).fit(z_move).kneighbors(z_ref, return_distance=False)
    ref_sets = [set(r) for r in nn_move]  # ref cell j -> its nearest move cells
    pairs = [(i, j) for i in range(len(z_move)) for j in nn_ref[i] if i in ref_sets[j]]
    if not pairs:
        return None
    i_idx, j_idx = np.asarray(pairs).T
    anchors = np.unique(i_idx)
    vectors = np.stack([(z_ref[j_idx[i_idx == a]].mean(0) - z_move[a]) for a in anchors])
    m = min(n_smooth, len(anchors))
    dist, near = NearestNeighbors(n_neighbors=m).fit(z_move[anchors]).kneighbors(z_move)
    scale = np.median(dist, axis=1, keepdims=True)
    w = np.exp(-0.5 * (dist / np.where(scale > 0, scale, 1.0)) ** 2)
    return (w[:, :, None] * vectors[near]).sum(1) / w.sum(1, keepdims=True)


def remove_batch(
    model,
    adata: AnnData,
    *,
    batch_key: str,
    cell_type_key: str | None = None,
    n_neighbors: int = 20,
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
      batch and the merged cells in the latent space (as fastMNN, but on the VAE's z):
      every MNN pair gives a vector, and every cell moves by the Gaussian-weighted mean
      of the vectors of its ``n_smooth`` nearest paired cells. Cell states present in one
      batch only still move with their nearest shared neighbours. If no pairs exist,
      the batch moves by the difference of means (with a warning).

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
        kNN size for the MNN pairs; paired cells averaged per cell (label-free only).
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
    for b in order[1:]:
        rows = batches == b
        if labels is None:
            shift = _mnn_shift(corrected[rows], corrected[merged], n_neighbors, n_smooth)
            if shift is None:
                warnings.warn(f"No mutual nearest neighbours between batch {b!r} and the merged cells: moved by the "
                              "difference of means.", UserWarning, stacklevel=2)
                shift = corrected[merged].mean(0) - corrected[rows].mean(0)
            corrected[rows] += shift
        else:
            for t in np.unique(labels[rows]):
                here, there = rows & (labels == t), merged & (labels == t)
                if there.any():  # a type absent from the merged cells stays where it is
                    corrected[here] += corrected[there].mean(0) - corrected[here].mean(0)
        merged |= rows
    corrected = corrected.astype(np.float32)
    layers = {layer_added: _decode(model, data, np.arange(adata.n_obs), corrected)} if layer_added else None
    target = adata.copy() if copy else adata
    params = params_record(batch_key=batch_key, cell_type_key=cell_type_key, n_neighbors=n_neighbors,
                           n_smooth=n_smooth, layer=model.layer if layer == "model" else layer)
    write_results(target, obsm={key_added: corrected}, layers=layers,
                  uns={key_added: {"params": params, "merge_order": np.asarray(order, dtype=str)}})
    return target if copy else None
