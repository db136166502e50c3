"""Do the batches hold the same cell types? A check on arrays, used by every batch-aware front.

Batch alignment assumes each batch holds the same cell types in similar proportions. Two checks:

- with labels, a label that holds almost none of a batch that should have been there by its
  size (:func:`batch_composition`);
- without labels, a cluster of one batch's cells that another batch has no cells near, in an
  integrated embedding (:func:`unmatched_clusters`).

Either way that batch lacks the group's cell type, or has it in another place of the
embedding, and the user should know: an alignment that ignores it can pull that group onto
other types.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pandas as pd

# a (group, batch) pair is "missing" when the batch has fewer than this share of the cells
# its size predicts there, and the prediction is at least MIN_EXPECTED cells (smaller groups
# are noise at any threshold)
MAX_OBSERVED_TO_EXPECTED = 0.1
MIN_EXPECTED = 10

# A cluster of one batch is unmatched in another batch when, for three quarters of its cells,
# the UNMATCHED_NEIGHBOURS-th nearest cell of that batch (the rank scaled by the two batches'
# sizes) is more than UNMATCHED_RATIO times as far as the UNMATCHED_NEIGHBOURS-th nearest cell of
# their own batch. On tl.vae's default latent of the shared designs (BENCHMARKS.md) the largest
# such ratio was 1.19 on balanced files and at least 1.72 where a batch lacked a type.
UNMATCHED_RATIO = 1.43
UNMATCHED_NEIGHBOURS = 5
MIN_CLUSTER_CELLS = 20


@dataclass(frozen=True)
class Composition:
    """Cells per group and batch, and the groups some batches lack.

    Attributes
    ----------
    counts
        (n_groups, n_batches) cell counts, groups as index, batches as columns.
    missing
        One row per (group, batch) pair where the batch is missing: columns ``group``,
        ``batch`` and, for labels, ``observed`` and ``expected`` (cells the batch's size
        predicts), for clusters of one batch ``distance_ratio`` (see :func:`unmatched_clusters`).
    source
        What the groups are: ``"labels '<key>'"`` or ``"Leiden clusters of each batch in '<key>'"``.
    cell_groups
        (n_cells,) the group of every cell checked (``""``: in no group), or None.
    """

    counts: pd.DataFrame
    missing: pd.DataFrame
    source: str
    cell_groups: np.ndarray | None = None

    @property
    def balanced(self) -> bool:
        return self.missing.empty

    @property
    def share_affected(self) -> float:
        """Share of all cells in groups that some batch lacks."""
        groups = self.missing["group"].unique()
        return float(self.counts.loc[groups].to_numpy().sum() / max(self.counts.to_numpy().sum(), 1))

    def unmatched(self, batch_order) -> np.ndarray:
        """(n_cells, n_batches) bool: True where a cell's group is missing in that batch of
        ``batch_order`` (the batch names, in the model's order); needs :attr:`cell_groups`."""
        column = {str(b): i for i, b in enumerate(batch_order)}
        out = np.zeros((len(self.cell_groups), len(column)), dtype=bool)
        for group, batch in zip(self.missing["group"], self.missing["batch"]):
            out[self.cell_groups == group, column[str(batch)]] = True
        return out

    def describe(self) -> str:
        clusters = "distance_ratio" in self.missing
        lacks = "has no cells of batch {} near it" if clusters else "has almost no cells of batch {}"
        per_group = []
        for group, rows in self.missing.groupby("group", sort=False):
            n = int(self.counts.loc[group].sum())
            per_group.append(f"{group!s} ({n} cells) " + lacks.format(", ".join(repr(b) for b in rows["batch"])))
        text = (f"the batches' compositions differ ({self.source}): " + "; ".join(per_group)
                + f" ({100 * self.share_affected:.1f} % of all cells are in such groups)")
        if clusters:
            # distances cannot tell a type some batch lacks from a shared type left unmixed
            text += (". Clusters cannot tell cell types that some batches lack from batches left unmixed: "
                     "both lie far from the other batches; pass label_key= to check with labels")
        return text

    def to_uns(self) -> dict:
        """Plain arrays for ``.uns`` (writable to ``.h5ad``)."""
        return {
            "source": self.source,
            "groups": self.counts.index.astype(str).to_numpy(),
            "batches": self.counts.columns.astype(str).to_numpy(),
            "counts": self.counts.to_numpy(dtype=np.int64),
            "missing_group": self.missing["group"].astype(str).to_numpy(),
            "missing_batch": self.missing["batch"].astype(str).to_numpy(),
            **{f"missing_{column}": self.missing[column].to_numpy(dtype=dtype)
               for column, dtype in (("observed", np.int64), ("expected", np.float64), ("distance_ratio", np.float64))
               if column in self.missing},
            "share_affected": self.share_affected,
        }


def batch_composition(groups, batches, *, source: str = "groups") -> Composition:
    """Count cells per (group, batch) and find the groups a batch is missing from.

    Parameters
    ----------
    groups, batches
        (n_cells,) group (label or cluster) and batch of every cell.
    source
        What the groups are, for messages.
    """
    counts = pd.crosstab(pd.Series(np.asarray(groups), name="group"), pd.Series(np.asarray(batches), name="batch"))
    n = counts.to_numpy().sum()
    expected = np.outer(counts.sum(1), counts.sum(0)) / max(n, 1)
    lacking = (counts.to_numpy() < MAX_OBSERVED_TO_EXPECTED * expected) & (expected >= MIN_EXPECTED)
    rows = [{"group": counts.index[i], "batch": counts.columns[j], "observed": int(counts.iat[i, j]),
             "expected": float(expected[i, j])} for i, j in zip(*np.nonzero(lacking))]
    missing = pd.DataFrame(rows, columns=["group", "batch", "observed", "expected"])
    return Composition(counts, missing, source)


def embedding_clusters(embedding: np.ndarray, *, n_neighbors: int = 15, resolution: float = 0.5,
                       max_cells: int = 20_000, seed: int = 0) -> np.ndarray:
    """Leiden clusters of an embedding's kNN graph, (n_cells,) int.

    Beyond ``max_cells`` the graph is built on a random subsample and every other cell takes
    the cluster of its nearest subsampled cell, so the check stays cheap on atlases.
    """
    import igraph
    from sklearn.neighbors import NearestNeighbors

    z = np.asarray(embedding, dtype=np.float32)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(z), max_cells, replace=False)) if len(z) > max_cells else np.arange(len(z))
    k = int(min(n_neighbors, len(sample) - 1))
    nn = NearestNeighbors(n_neighbors=k + 1).fit(z[sample])
    idx = nn.kneighbors(z[sample], return_distance=False)[:, 1:]
    edges = np.column_stack([np.repeat(np.arange(len(sample)), k), idx.ravel()])
    graph = igraph.Graph(n=len(sample), edges=edges.tolist(), directed=False).simplify()
    igraph.set_random_number_generator(random.Random(seed))  # igraph's generator is global: seed it, then restore
    try:
        part = graph.community_leiden(objective_function="modularity", resolution=resolution, n_iterations=-1)
    finally:
        igraph.set_random_number_generator(random)
    labels = np.asarray(part.membership)
    if len(sample) == len(z):
        return labels
    return labels[nn.kneighbors(z, n_neighbors=1, return_distance=False)[:, 0]]


def unmatched_clusters(embedding: np.ndarray, batches, *, source: str = "Leiden clusters of each batch",
                       ratio: float = UNMATCHED_RATIO, max_cells: int = 20_000, seed: int = 0) -> Composition:
    """Clusters of one batch's cells that another batch has no cells near, in an integrated embedding.

    Each batch is clustered on its own (:func:`embedding_clusters`), so a type that a batch
    lacks cannot hide in a joint cluster of a similar type. A cluster of at least
    ``MIN_CLUSTER_CELLS`` cells is unmatched in another batch when, for three quarters of its
    cells, the distance to the ``k``-th nearest cell of that batch exceeds ``ratio``
    (``UNMATCHED_RATIO``) times the distance to the ``UNMATCHED_NEIGHBOURS``-th nearest cell of their own batch
    (``k`` is that rank scaled by the ratio of the batches' sizes, so batch size alone does
    not move the ratio).

    Parameters
    ----------
    embedding
        (n_cells, n_dims) integrated embedding, e.g. ``tl.vae``'s latent.
    batches
        (n_cells,) batch of every cell.
    source
        What the groups are, for messages.
    ratio
        The distance ratio above which a cluster is unmatched (0 lists every cluster and
        other batch, to see how far the ratios are from it).
    max_cells
        Beyond this many cells the check runs on a random subsample of them.
    seed
        Seed of the subsample and the clustering.

    Returns
    -------
    :class:`Composition` whose groups are ``"cluster <c> of '<batch>'"``, with the batches
    an unmatched cluster lacks in ``missing`` (column ``distance_ratio``: the lower quartile
    of its cells' ratios).
    """
    from sklearn.neighbors import NearestNeighbors

    z_all = z = np.asarray(embedding, dtype=np.float32)
    batches_all = batches = np.asarray(batches).astype(str)
    keep = None
    if len(z) > max_cells:
        keep = np.sort(np.random.default_rng(seed).choice(len(z), max_cells, replace=False))
        z, batches = z[keep], batches[keep]
    k = UNMATCHED_NEIGHBOURS
    names = [str(b) for b in pd.unique(batches) if (batches == b).sum() > k]
    groups = np.full(len(z), "", dtype=object)
    rows = []
    for own in names:
        mine = batches == own
        own_kth = NearestNeighbors(n_neighbors=k + 1).fit(z[mine]).kneighbors(z[mine])[0][:, -1]
        clusters = embedding_clusters(z[mine], seed=seed)
        sizes = np.bincount(clusters)
        cluster_names = np.array([f"cluster {c} of {own!r}" for c in range(len(sizes))], dtype=object)
        groups[mine] = cluster_names[clusters]
        for other in names:
            if other == own:
                continue
            theirs = batches == other
            rank = int(np.clip(round(k * theirs.sum() / mine.sum()), 1, theirs.sum()))
            their_kth = NearestNeighbors(n_neighbors=rank).fit(z[theirs]).kneighbors(z[mine])[0][:, -1]
            ratios = their_kth / np.maximum(own_kth, np.finfo(np.float32).tiny)
            for c in np.flatnonzero(sizes >= MIN_CLUSTER_CELLS):
                quartile = float(np.quantile(ratios[clusters == c], 0.25))
                if quartile > ratio:
                    rows.append({"group": cluster_names[c], "batch": other, "distance_ratio": quartile})
    counted = groups != ""
    counts = pd.crosstab(pd.Series(groups[counted], name="group"), pd.Series(batches[counted], name="batch"))
    return Composition(counts, pd.DataFrame(rows, columns=["group", "batch", "distance_ratio"]), source,
                       groups if keep is None else _nearest_groups(z_all, batches_all, keep, groups))


def _nearest_groups(z, batches, keep, kept_groups) -> np.ndarray:
    """(n_cells,) groups of every cell of ``z``: the subsample ``keep``'s own, else that of
    the nearest subsampled cell of the same batch."""
    from sklearn.neighbors import NearestNeighbors

    out = np.full(len(z), "", dtype=object)
    out[keep] = kept_groups
    rest = np.setdiff1d(np.arange(len(z)), keep)
    for b in np.unique(batches[rest]):
        sampled = keep[batches[keep] == b]
        todo = rest[batches[rest] == b]
        if len(sampled):
            near = NearestNeighbors(n_neighbors=1).fit(z[sampled]).kneighbors(z[todo], return_distance=False)[:, 0]
            out[todo] = out[sampled][near]
    return out
