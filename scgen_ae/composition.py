"""Do the batches hold the same cell types? A check on arrays, used by every batch-aware front.

Batch alignment assumes each batch holds the same cell types in similar proportions. Where a
group of cells (a label, or a cluster of an embedding) holds almost none of a batch that should
have been there by its size, that batch lacks the group's cell type, or has it in another place
of the embedding: either way the user should know, because an alignment that ignores it can
pull that group onto other types.
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


@dataclass(frozen=True)
class Composition:
    """Cells per group and batch, and the groups some batches lack.

    Attributes
    ----------
    counts
        (n_groups, n_batches) cell counts, groups as index, batches as columns.
    missing
        One row per (group, batch) pair where the batch is missing: columns ``group``,
        ``batch``, ``observed``, ``expected`` (cells the batch's size predicts).
    source
        What the groups are: ``"labels '<key>'"`` or ``"clusters of '<key>'"``.
    """

    counts: pd.DataFrame
    missing: pd.DataFrame
    source: str

    @property
    def balanced(self) -> bool:
        return self.missing.empty

    @property
    def share_affected(self) -> float:
        """Share of all cells in groups that some batch lacks."""
        groups = self.missing["group"].unique()
        return float(self.counts.loc[groups].to_numpy().sum() / max(self.counts.to_numpy().sum(), 1))

    def describe(self) -> str:
        per_group = []
        for group, rows in self.missing.groupby("group", sort=False):
            n = int(self.counts.loc[group].sum())
            lacking = ", ".join(repr(b) for b in rows["batch"])
            per_group.append(f"{group!s} ({n} cells) has almost no cells of batch {lacking}")
        text = (f"the batches' compositions differ ({self.source}): " + "; ".join(per_group)
                + f" ({100 * self.share_affected:.1f} % of all cells are in such groups)")
        if self.source.startswith("clusters"):
            # clusters cannot tell a type some batch lacks from a shared type left unmixed
            text += (". Clusters cannot tell cell types that some batches lack from batches left unmixed: "
                     "both give clusters of one batch; pass label_key= to check with labels")
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
            "missing_observed": self.missing["observed"].to_numpy(dtype=np.int64),
            "missing_expected": self.missing["expected"].to_numpy(dtype=np.float64),
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
