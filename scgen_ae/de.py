"""Bayes-factor differential expression from paired posterior samples: the arithmetic only.

Arrays in, arrays and data frames out; :func:`scgen_ae.tl.differential_expression` draws the
samples from a trained model and writes the results. The method is that of scvi-tools'
``differential_expression`` (Lopez et al. 2018 "vanilla", Boyeau et al. 2019 "change"):
pairs of normalised-expression samples, one from a cell of each group, give samples of the
log2 fold change ``lfc = log2(s1 + eps) - log2(s2 + eps)``; a gene's evidence is the
posterior probability that this change is beyond ``delta`` in either direction.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

MODES = ("change", "vanilla")
LOG_EPS = 1e-8  # keeps the Bayes factor finite where a probability is 0 or 1


def balanced_draws(cells: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` cells of ``cells`` in random order, each drawn ``n // len(cells)`` or one more
    times: fewer repeats of one cell than independent draws, so the samples cover the group."""
    repeats = -(-n // len(cells))
    return cells[rng.permutation(len(cells) * repeats)[:n] % len(cells)]


def log2_ratio(scale1: np.ndarray, scale2: np.ndarray, pseudocount: float) -> np.ndarray:
    """(m, g) samples of the log2 fold change of paired normalised-expression samples."""
    return np.log2(scale1 + pseudocount) - np.log2(scale2 + pseudocount)


def row_medians(samples: np.ndarray) -> np.ndarray:
    """``np.median(samples, axis=1)``, reordering the rows of ``samples`` in place: one
    single-kth partition and the minimum above it, where numpy's two-kth partition (even
    lengths) is about 7x slower."""
    n = samples.shape[1]
    k = (n - 1) // 2
    samples.partition(k, axis=1)
    low = samples[:, k].astype(np.float64)
    return low if n % 2 else 0.5 * (low + samples[:, k + 1:].min(1))


def summarize_lfc(lfc: np.ndarray, *, mode: str, delta: float) -> dict[str, np.ndarray]:
    """Per-gene posterior summaries of (n_genes, n_pairs) log2-fold-change samples (each row is
    reordered in place).

    ``proba_m1`` / ``proba_m2``: the probability that group 1 is higher / lower; beyond
    ``delta`` in mode "change" (``lfc >= delta`` / ``lfc <= -delta``), at all in mode
    "vanilla" (then they sum to 1). ``proba_de`` is the larger of the two. ``bayes_factor`` is
    log(proba_de / (1 - proba_de)) in mode "change" and log(proba_m1 / proba_m2) in mode
    "vanilla", as in scvi-tools.
    """
    n = lfc.shape[1]
    if mode == "change":
        up, down = np.count_nonzero(lfc >= delta, axis=1) / n, np.count_nonzero(lfc <= -delta, axis=1) / n
    else:
        up = np.count_nonzero(lfc > 0, axis=1) / n
        down = 1.0 - up
    proba_de = np.maximum(up, down)
    if mode == "change":
        bayes_factor = np.log(proba_de + LOG_EPS) - np.log(1.0 - proba_de + LOG_EPS)
    else:
        bayes_factor = np.log(up + LOG_EPS) - np.log(down + LOG_EPS)
    return {"proba_de": proba_de, "proba_not_de": 1.0 - proba_de, "bayes_factor": bayes_factor,
            "proba_m1": up, "proba_m2": down, "lfc_mean": lfc.mean(1), "lfc_std": lfc.std(1),
            "lfc_min": lfc.min(1), "lfc_max": lfc.max(1), "lfc_median": row_medians(lfc)}  # reorders: last


def posterior_fdr(proba_de: np.ndarray) -> np.ndarray:
    """Posterior expected FDR of the list of genes cut at each gene.

    Genes are listed by decreasing ``proba_de``; the expected FDR of the first k is the mean
    of their ``1 - proba_de``, which never decreases along the list. So the genes whose value
    is at most a target t are exactly the longest list with expected FDR <= t (the
    procedure scvi-tools uses for ``is_de_fdr_<t>``): a Bayesian analogue of q-values.
    """
    order = np.argsort(-proba_de, kind="stable")
    out = np.empty(len(proba_de))
    out[order] = np.cumsum(1.0 - proba_de[order]) / np.arange(1, len(proba_de) + 1)
    return out


def raw_stats(blocks, library: np.ndarray, rows1: np.ndarray, rows2: np.ndarray) -> dict[str, np.ndarray]:
    """Per-gene means of the counts, shares of cells with a non-zero count, and means of the
    counts per 10^4 (scvi-tools' column names, suffix 1 / 2 for the groups), from
    ``(start, stop, CSR rows)`` blocks of all cells (:func:`~scgen_ae.data.iter_row_blocks`):
    two sparse products per block, no copy of a group's rows."""
    weights = np.zeros((len(library), 4), np.float32)  # the counts' dtype: float64 would copy each block
    weights[rows1, 0], weights[rows2, 1] = 1.0 / len(rows1), 1.0 / len(rows2)
    weights[:, 2:] = weights[:, :2] * (1e4 / np.maximum(library, 1.0))[:, None]
    sums, nonzero = 0.0, 0.0  # float64 across blocks
    for start, stop, X in blocks:
        binary = sp.csr_matrix((np.ones_like(X.data), X.indices, X.indptr), shape=X.shape)
        sums = sums + (X.T @ weights[start:stop]).astype(np.float64)
        nonzero = nonzero + (binary.T @ weights[start:stop, :2]).astype(np.float64)
    return {"raw_mean1": sums[:, 0], "raw_mean2": sums[:, 1], "non_zeros_proportion1": nonzero[:, 0],
            "non_zeros_proportion2": nonzero[:, 1], "raw_normalized_mean1": sums[:, 2],
            "raw_normalized_mean2": sums[:, 3]}


def de_table(genes, summary: dict, raw: dict, *, scale1, scale2, pseudocount: float, delta: float,
             mode: str, fdr_target: float, group1: str, group2: str) -> pd.DataFrame:
    """One comparison's result, genes sorted by evidence (``proba_de`` in mode "change",
    ``bayes_factor`` in mode "vanilla"; ties by |lfc_mean|), as scvi-tools lists them."""
    fdr = posterior_fdr(summary["proba_de"])
    table = pd.DataFrame({**summary, "scale1": scale1, "scale2": scale2, "pseudocounts": pseudocount,
                          "delta": delta if mode == "change" else np.nan, **raw,
                          "posterior_fdr": fdr, f"is_de_fdr_{fdr_target}": fdr <= fdr_target},
                         index=pd.Index([str(g) for g in genes], name=None))
    key = summary["proba_de"] if mode == "change" else summary["bayes_factor"]
    order = np.lexsort((-np.abs(summary["lfc_mean"]), -key))
    table = table.iloc[order]
    table["comparison"] = f"{group1} vs {group2}"
    table["group1"], table["group2"] = group1, group2
    return table


def rank_genes_groups_record(tables: dict[str, pd.DataFrame], params: dict, fdr_target: float) -> dict:
    """scanpy's ``rank_genes_groups`` layout of one table per group (``group1`` value).

    Per group, ``scores`` is ``lfc_mean`` for the genes called DE at ``fdr_target`` and 0 for
    the others, and genes are ordered by it (ties, the zeros, by ``lfc_mean``): the called
    up-regulated genes first, largest fold change first, as markers are read off scanpy's
    tests; the called down-regulated ones last. Ranked by the fold change among the called
    genes rather than by ``proba_de``, which reaches 1 for many genes and then orders them by
    the tails of the samples: the top 200 agreed better between two protocols (BENCHMARKS.md).
    ``pvals`` holds ``proba_not_de`` (the local false discovery rate) and ``pvals_adj`` the
    posterior expected FDR of the list cut there (:func:`posterior_fdr`): posterior
    probabilities, not p-values, in their roles (``sc.get.rank_genes_groups_df(...,
    pval_cutoff=t)`` returns the genes called DE at target FDR t).
    """
    columns = {"names": {}, "scores": {}, "logfoldchanges": {}, "pvals": {}, "pvals_adj": {}}
    for group, table in tables.items():
        score = np.where(table["posterior_fdr"] <= fdr_target, table["lfc_mean"], 0.0)
        order = np.lexsort((-table["lfc_mean"].to_numpy(), -score))
        ranked = table.iloc[order]
        columns["names"][group] = ranked.index.to_numpy(dtype=object)
        columns["scores"][group] = score[order]
        columns["logfoldchanges"][group] = ranked["lfc_mean"].to_numpy()
        columns["pvals"][group] = ranked["proba_not_de"].to_numpy()
        columns["pvals_adj"][group] = ranked["posterior_fdr"].to_numpy()
    dtypes = {"names": "O", "scores": "float32", "logfoldchanges": "float32", "pvals": "float64",
              "pvals_adj": "float64"}
    record = {"params": params}
    for name, per_group in columns.items():
        frame = pd.DataFrame(per_group)
        record[name] = frame.to_records(index=False, column_dtypes={g: dtypes[name] for g in frame.columns})
    genes = next(iter(tables.values())).index
    for key, suffix in (("pts", "1"), ("pts_rest", "2")):
        record[key] = pd.DataFrame({g: t["non_zeros_proportion" + suffix].reindex(genes).to_numpy()
                                    for g, t in tables.items()}, index=genes)
    return record
