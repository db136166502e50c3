"""``tl.batch_composition`` and the composition check every batch-aware front runs after fitting."""
from __future__ import annotations

import warnings

import numpy as np
from anndata import AnnData

from .. import _validate as v
from ..composition import Composition, batch_composition as _count, unmatched_clusters
from ._common import write_results


class CompositionWarning(UserWarning):
    """The batches do not hold the same cell types (see :func:`scgen_ae.tl.batch_composition`)."""


def batch_names(adata: AnnData, batch_key: str):
    """(n_cells,) batch name of every cell, as the composition check counts them."""
    return adata.obs[batch_key].astype(str).to_numpy()


def composition(adata: AnnData, batches, *, label_key: str | None, embedding=None, use_rep: str | None = None,
                seed: int = 0) -> Composition:
    """Composition by ``obs[label_key]`` when given, else by the clusters of each batch in
    ``embedding`` that other batches have no cells near."""
    if label_key is not None:
        labels = adata.obs[label_key].astype(str).to_numpy()
        return _count(labels, batches, source=f"labels '{label_key}'")
    return unmatched_clusters(embedding, batches, source=f"Leiden clusters of each batch in '{use_rep}'", seed=seed)


def warn_if_unbalanced(report: Composition, *, front: str, control: str, stacklevel: int = 4) -> None:
    if not report.balanced:
        warnings.warn(f"{front}: {report.describe()}. {control}", CompositionWarning, stacklevel=stacklevel)


def composition_record(adata: AnnData, *, batch_key: str | None, label_key: str | None, embedding,
                       use_rep: str, seed: int, front: str, control: str,
                       report: Composition | None = None, stacklevel: int = 4) -> dict | None:
    """What a batch-aware front stores in ``uns[uns_key]["composition"]`` (None with < 2 batches),
    warning when some batch lacks a group; ``report``: the check already run on ``embedding``;
    ``stacklevel``: the warning's, as :func:`warnings.warn`'s (the default 4: the caller of the
    front that calls this)."""
    if batch_key is None or adata.obs[batch_key].nunique() < 2:
        return None
    if report is None:
        report = composition(adata, batch_names(adata, batch_key), label_key=label_key,
                             embedding=embedding, use_rep=use_rep, seed=seed)
    warn_if_unbalanced(report, front=front, control=control, stacklevel=stacklevel)
    return report.to_uns()


def check_label_key(adata: AnnData, label_key: str | None) -> None:
    if label_key is None:
        return
    if label_key not in adata.obs:
        cols = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
        raise v.InputError(f"label_key={label_key!r} is not a column of adata.obs (columns: {cols}).")
    if adata.obs[label_key].isna().any():
        raise v.InputError(f"adata.obs[{label_key!r}] has {int(adata.obs[label_key].isna().sum())} missing "
                           "values; label those cells (e.g. 'unknown') or leave label_key out.")


def batch_composition(
    adata: AnnData,
    *,
    batch_key: str,
    groupby: str | None = None,
    use_rep: str | None = None,
    key_added: str = "batch_composition",
    seed: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Check whether the batches hold the same cell types, in numbers their sizes predict.

    Batch alignment (``tl.vae``'s MMD penalty, ``tl.nmf``'s quantile alignment, Harmony, ...)
    assumes the batches share their cell types. With ``groupby`` (e.g. cell-type labels)
    this counts cells per label and batch and flags each label that holds fewer than 10 % of
    the cells a batch's size predicts there (where that prediction is at least 10 cells).
    With ``use_rep`` it clusters each batch's cells of the embedding on their own (Leiden,
    resolution 0.5, 15 neighbours) and flags each cluster of 20 or more cells that another
    batch has no cells near (:func:`scgen_ae.composition.unmatched_clusters`). Either way
    that batch lacks the group's cell type, or the embedding keeps its cells elsewhere.
    A :class:`CompositionWarning` names the groups and batches.

    Parameters
    ----------
    adata
        Cells x genes.
    batch_key
        ``obs`` column with the batch of each cell.
    groupby
        ``obs`` column with labels; None clusters ``obsm[use_rep]`` instead.
    use_rep
        ``obsm`` key of an embedding to cluster (needed without ``groupby``).
    key_added
        ``uns`` key of the result.
    seed
        Seed of the clustering.
    copy
        Return a copy of ``adata`` with the result instead of writing into it.

    Sets
    ----
    ``adata.uns[key_added]``: ``source`` (what the groups are), ``groups`` / ``batches``
    (names), ``counts`` ((n_groups, n_batches) cells), ``missing_group`` / ``missing_batch``
    (one entry per flagged pair) with, for labels, ``missing_observed`` / ``missing_expected``
    (cells seen and predicted), for clusters ``missing_distance_ratio`` (lower quartile of the
    cluster's distance ratios), ``share_affected`` (share of cells in flagged groups) and
    ``params``.
    """
    v.check_target(adata, copy, "sa.tl.batch_composition")
    batches = v.batch_codes(adata, batch_key)
    names = np.asarray(batches[1])[batches[0]]
    check_label_key(adata, groupby)
    if groupby is None:
        if use_rep is None or use_rep not in adata.obsm:
            have = ", ".join(map(repr, adata.obsm.keys())) or "none"
            raise v.InputError(f"batch_composition needs groupby= (an obs column) or use_rep= (an obsm key to "
                               f"cluster); use_rep={use_rep!r} is not in adata.obsm (keys: {have}).")
        embedding = np.asarray(adata.obsm[use_rep])
    else:
        embedding = None
    report = composition(adata, names, label_key=groupby, embedding=embedding, use_rep=use_rep, seed=seed)
    warn_if_unbalanced(report, front="batch_composition", control="Integrate with a method that keeps "
                       "batch-unique types apart (tl.vae's default) and check the groups named here.", stacklevel=3)
    target = adata.copy() if copy else adata
    result = report.to_uns()
    result["params"] = {"batch_key": batch_key, "groupby": str(groupby), "use_rep": str(use_rep), "seed": seed}
    write_results(target, uns={key_added: result})
    return target if copy else None
