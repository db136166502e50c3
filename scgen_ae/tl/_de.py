"""Bayes-factor differential expression with a trained VAE or DAE (scvi-tools' method)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .. import _validate as v
from ..data import iter_row_blocks
from ..likelihoods import likelihood_names
from ..de import MODES, balanced_draws, de_table, log2_ratio, rank_genes_groups_record, raw_stats, summarize_lfc
from ..models.dae import DAE
from ..models.vae import VAE
from ._common import params_record, write_results
from ._predict import _obs_values

MIN_CELLS = 3
LFC_STORE_BYTES = 256 << 20  # the log-fold-change samples kept for the medians, per pass over the genes


def _check_options(model, *, mode, delta, fdr_target, n_samples, pseudocount, chunk_size, random_state) -> None:
    if not isinstance(model, (VAE, DAE)):
        raise v.InputError(f"model must be a trained sa.VAE (sa.tl.vae) or DAE (sa.tl.denoise), got "
                           f"{type(model).__name__}; train one first, e.g. model = sa.tl.vae(adata, batch_key=...).")
    if not model.module.likelihood.counts:
        raise v.InputError(f"model was trained with likelihood={model.config.likelihood!r} (log-normalised data): its "
                           "decoder has no normalised expression scale to compare. Train it on counts (likelihood="
                           f"{' or '.join(map(repr, likelihood_names(counts=True)))}).")
    checks = [
        (mode in MODES, f"mode={mode!r}", "choose 'change' (P(|LFC| > delta)) or 'vanilla' (P(group 1 higher))"),
        (v._is_number(delta) and delta >= 0, f"delta={delta!r}", "pass a log2 fold change >= 0, e.g. delta=0.25"),
        (v._is_number(fdr_target) and 0 < fdr_target < 1, f"fdr_target={fdr_target!r}", "pass e.g. 0.05"),
        (v._is_int(n_samples) and n_samples >= 2, f"n_samples={n_samples!r}",
         "pass an integer >= 2 (posterior samples per group), e.g. 5000"),
        (v._is_number(pseudocount) and pseudocount >= 0, f"pseudocount={pseudocount!r}",
         "pass a share >= 0, e.g. 1e-5"),
        (v._is_int(chunk_size) and chunk_size >= 1, f"chunk_size={chunk_size!r}", "pass e.g. 1024"),
        (v._is_int(random_state) and random_state >= 0, f"random_state={random_state!r}", "pass e.g. 0"),
    ]
    for ok, what, fix in checks:
        if not ok:
            raise v.InputError(f"differential_expression: {what} is invalid; {fix}.")


def _comparisons(labels: np.ndarray, groupby: str, group1, group2) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(group1, group2 or "rest", rows of 1, rows of 2) per comparison, checked before any work."""
    present = pd.Series(labels).value_counts()
    known = sorted(present.index)

    def check(group, what):
        if str(group) not in present.index:
            raise v.InputError(f"{what}={group!r} is not a value of adata.obs[{groupby!r}] (values: {known[:20]}); "
                               "pass one of them.")
        if present[str(group)] < MIN_CELLS:
            raise v.InputError(f"{what}={group!r} has {present[str(group)]} cells in adata.obs[{groupby!r}]; "
                               f"differential expression needs at least {MIN_CELLS} per group. Merge it with "
                               "another group or leave it out.")

    if group1 is None:
        firsts = known
    elif isinstance(group1, (list, tuple, np.ndarray, pd.Index, pd.Series)):
        firsts = list(dict.fromkeys(group1))  # each comparison once
    else:
        firsts = [group1]
    if not firsts:
        raise v.InputError("group1 is empty; pass a value of adata.obs[groupby], a list of them, or None for all.")
    if group2 is not None:
        check(group2, "group2")
        firsts = [g for g in firsts if str(g) != str(group2)] if group1 is None else firsts
    out = []
    for g in firsts:
        check(g, "group1")
        if group2 is not None and str(g) == str(group2):
            raise v.InputError(f"group1 and group2 are both {g!r}; compare two different groups.")
        rows1 = np.flatnonzero(labels == str(g))
        rows2 = np.flatnonzero(labels == str(group2)) if group2 is not None else np.flatnonzero(labels != str(g))
        if len(rows2) < MIN_CELLS:
            raise v.InputError(f"The rest of group1={g!r} (all other cells of adata.obs[{groupby!r}]) has "
                               f"{len(rows2)} cells; one-vs-rest needs at least {MIN_CELLS}.")
        out.append((str(g), "rest" if group2 is None else str(group2), rows1, rows2))
    return out


def _posterior_summary(model, data, rows1, rows2, *, n_samples, batch_correction, pseudocount, chunk_size,
                       random_state, mode, delta) -> tuple[dict, np.ndarray, np.ndarray]:
    """Per-gene summaries of ``n_samples`` log2-fold-change samples (see :func:`summarize_lfc`)
    and the mean expression shares of each group.

    Pairs are decoded ``chunk_size`` at a time. The samples of a block of genes are kept for
    the medians, at most LFC_STORE_BYTES of them: with more genes, each block draws the same
    pairs again (same seeds), so memory does not grow with the genes or the cells.
    """
    rng = np.random.default_rng(random_state)
    cells1, cells2 = balanced_draws(rows1, n_samples, rng), balanced_draws(rows2, n_samples, rng)
    if batch_correction:  # both sides of a pair decoded in the same batch, every batch equally often
        batch1 = batch2 = rng.permutation(np.arange(n_samples) % len(model.batch_categories))
    else:
        batch1, batch2 = data.batch[cells1], data.batch[cells2]
    n_genes = len(model.var_names)
    block = max(1, min(n_genes, LFC_STORE_BYTES // (4 * n_samples)))
    summary, means = {}, np.zeros((2, n_genes))
    for start in range(0, n_genes, block):
        cols = slice(start, min(start + block, n_genes))
        lfc = np.empty((cols.stop - start, n_samples), np.float32)  # genes x samples: the medians read rows
        generator = torch.Generator().manual_seed(random_state)
        for s in range(0, n_samples, chunk_size):
            part = slice(s, s + chunk_size)
            s1 = model.sample_scale(data, cells1[part], batch1[part], generator)[:, cols].cpu().numpy()
            s2 = model.sample_scale(data, cells2[part], batch2[part], generator)[:, cols].cpu().numpy()
            lfc[:, part] = log2_ratio(s1, s2, pseudocount).T
            means[0, cols] += s1.sum(0)
            means[1, cols] += s2.sum(0)
        for key, values in summarize_lfc(lfc, mode=mode, delta=delta).items():
            summary.setdefault(key, np.empty(n_genes))[cols] = values
    return summary, means[0] / n_samples, means[1] / n_samples


def differential_expression(
    model: VAE | DAE,
    adata: AnnData,
    *,
    groupby: str,
    group1: str | Sequence[str] | None,
    group2: str | None = None,
    mode: str = "change",
    delta: float = 0.25,
    batch_correction: bool = True,
    fdr_target: float = 0.05,
    n_samples: int = 5000,
    pseudocount: float = 1e-5,
    layer="model",
    batch_key="model",
    chunk_size: int = 1024,
    random_state: int = 0,
    key_added: str = "rank_genes_groups_vae",
) -> pd.DataFrame:
    """Bayes-factor differential expression from a trained VAE (or DAE): scvi-tools' method.

    For each comparison, ``n_samples`` pairs are drawn: a cell of each group (every cell about
    equally often), z ~ q(z | x) for each (the DAE's bottleneck is deterministic), both decoded
    to normalised expression shares s1, s2 in the same batch. The pairs are samples of
    ``lfc = log2(s1 + pseudocount) - log2(s2 + pseudocount)``, which take in both the posterior
    uncertainty and the variation between the cells of each group. Mode "change" (Boyeau et
    al. 2019): ``proba_de`` = max(P(lfc >= delta), P(lfc <= -delta)), ``bayes_factor`` =
    log(proba_de / (1 - proba_de)); genes are called DE by the posterior expected FDR
    procedure at ``fdr_target``. Mode "vanilla" (Lopez et al. 2018): P(s1 > s2).

    Parameters
    ----------
    model
        A trained :class:`~scgen_ae.VAE` (count likelihood) or :class:`~scgen_ae.models.DAE`.
    adata
        Cells x genes with the counts the model reads (``layer``) for every gene of the model
        (matched by name; other genes are ignored) and ``obs[groupby]``.
    groupby
        ``obs`` column of the groups.
    group1
        A group, a list of groups (one comparison each), or None for every group.
    group2
        The reference group; None compares each ``group1`` with all other cells (one-vs-rest).
    mode
        "change" (default) or "vanilla".
    delta
        Smallest log2 fold change that counts as DE in mode "change" (0.25: 19 %).
    batch_correction
        True (default): every pair is decoded in one of the model's batches, each batch equally
        often, whatever batches the cells came from, so the fold changes compare the groups
        batch for batch and the result is averaged over batches. False: each cell is decoded
        in its own batch (the groups' batch composition then enters the fold changes).
    fdr_target
        Target posterior expected FDR of the genes called DE (``is_de_fdr_<fdr_target>``).
    n_samples
        Pairs of posterior samples per comparison (the samples per group), as scvi-tools'
        ``n_samples_overall``.
    pseudocount
        Added to the expression shares before the log (1e-5: 0.1 counts in a cell of 10^4), so
        that genes barely detected in either group get fold changes near 0, not ratios of noise.
    layer, batch_key
        Where the counts and batches are ("model": those the model was trained with).
    chunk_size
        Pairs decoded at a time.
    random_state
        Seed of the cell draws and posterior samples (the same seed gives the same result).
    key_added
        ``uns`` key of the result in scanpy's ``rank_genes_groups`` layout.

    Memory
    ------
    One chunk of ``chunk_size x n_genes`` shares per group, and the ``n_samples x n_genes``
    float32 fold-change samples (for the medians) but at most 256 MB of them: beyond, the
    genes are done in blocks, each drawing the same pairs again. The counts are read a block of
    rows at a time and never copied, so the cells add only a few per-cell vectors (and the NaN
    check's byte per stored count): about 180 MB in all at 10^4 and at 10^5 cells x 2,000 genes.

    Notes
    -----
    ``lfc_mean`` averages over pairs of cells: it is the difference of the groups' mean log2
    expression, not the log2 ratio of their mean expression (``scale1`` / ``scale2``). The DAE
    has no posterior, so its samples differ only between cells. The DataFrame lists genes as
    scvi-tools does (by ``proba_de``); ``uns[key_added]`` ranks the genes called DE by fold
    change instead, which agreed better between protocols (BENCHMARKS.md, "Differential
    expression").

    Returns
    -------
    pandas.DataFrame
        One row per gene and comparison (genes as the index, scvi-tools' column names), most
        evidence first: ``proba_de``, ``proba_not_de``, ``bayes_factor``, ``proba_m1`` /
        ``proba_m2`` (P(up) / P(down), beyond ``delta`` in mode "change"), ``lfc_mean``,
        ``lfc_median``, ``lfc_std``, ``lfc_min``, ``lfc_max``, ``scale1`` / ``scale2`` (mean
        expression shares), ``raw_mean1`` / ``2``, ``non_zeros_proportion1`` / ``2``,
        ``raw_normalized_mean1`` / ``2`` (counts per 10^4), ``pseudocounts``, ``delta``,
        ``posterior_fdr`` (expected FDR of the list cut at that gene),
        ``is_de_fdr_<fdr_target>``, ``comparison``, ``group1``, ``group2``.

    Sets ``adata.uns[key_added]`` (scanpy's ``rank_genes_groups`` layout: ``sc.get.rank_genes_groups_df``
    and ``sc.pl.rank_genes_groups*`` read it), with one field per ``group1`` value in each of

    - ``names``, ``scores`` (``lfc_mean`` of the genes called DE, 0 for the others: called
      up-regulated genes first, largest fold change first), ``logfoldchanges`` (``lfc_mean``),
      ``pvals`` (``proba_not_de``: not a p-value but the posterior probability of no DE) and
      ``pvals_adj`` (``posterior_fdr``: genes with ``pvals_adj <= fdr_target`` are those called
      DE): (n_genes,) record arrays;
    - ``pts`` / ``pts_rest``: (n_genes, n_groups) data frames, the share of cells with a count
      in the group / in the reference;
    - ``params``: ``groupby``, ``reference``, ``method``, ``use_raw``, ``layer`` (scanpy's) and
      this call's options.

    Invalid input raises :class:`~scgen_ae.InputError` before any work, with ``adata`` untouched.
    """
    v.check_target(adata, False, "sa.tl.differential_expression")
    _check_options(model, mode=mode, delta=delta, fdr_target=fdr_target, n_samples=n_samples,
                   pseudocount=pseudocount, chunk_size=chunk_size, random_state=random_state)
    labels = _obs_values(adata, groupby, "groupby")
    comparisons = _comparisons(labels, groupby, group1, group2)
    # genes, batches and counts checked here; only rows are densified, so the column order stays as given
    data = model._cell_data(adata, layer, batch_key, sorted_indices=False)
    tables = {}
    for first, second, rows1, rows2 in comparisons:
        summary, scale1, scale2 = _posterior_summary(
            model, data, rows1, rows2, n_samples=n_samples, batch_correction=batch_correction,
            pseudocount=pseudocount, chunk_size=chunk_size, random_state=random_state, mode=mode, delta=delta)
        raw = raw_stats(iter_row_blocks(data), data.library, rows1, rows2)
        tables[first] = de_table(model.var_names, summary, raw, scale1=scale1, scale2=scale2, pseudocount=pseudocount,
                                 delta=delta, mode=mode, fdr_target=fdr_target, group1=first, group2=second)
    kind = "vae" if isinstance(model, VAE) else "dae"
    params = params_record(groupby=groupby, reference="rest" if group2 is None else str(group2),
                           method=f"{kind}_{mode}", use_raw=False,
                           layer=model.layer if layer == "model" else layer, corr_method="posterior_expected_fdr",
                           mode=mode, delta=delta, batch_correction=batch_correction, fdr_target=fdr_target,
                           n_samples=n_samples, pseudocount=pseudocount, random_state=random_state)
    write_results(adata, uns={key_added: rank_genes_groups_record(tables, params, fdr_target)})
    return pd.concat(tables.values())
