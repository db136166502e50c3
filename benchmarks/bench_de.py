#!/usr/bin/env python
"""By-hand benchmark: Bayes-factor differential expression (``sa.tl.differential_expression``)
against scvi-tools' ``SCVI.differential_expression`` and scanpy's Wilcoxon test.

All on CellBench ``cellbench_3cl`` (2,000 seurat_v3 HVGs over both protocols); one model of
each kind per model seed, trained on all cells (``sa.tl.vae`` defaults; scvi-tools through
``backend="scvi-tools"``, the same architecture and epochs). Both DE methods run in mode
"change", ``delta=0.25``, ``batch_correction=True``, 5,000 samples per group. Wilcoxon does
not depend on a model (model_seed "-").

- ``calibration``: one cell line within one protocol split at random in two halves; the share
  of genes called DE (ours and scvi-tools: ``is_de_fdr_0.05``; Wilcoxon: BH-adjusted p < 0.05
  on log-normalised counts). Every call is false. ``min_q``: the strongest gene's posterior
  expected FDR (1 - its proba_de) or smallest adjusted p, i.e. how far it is from a call.
- ``consistency``: H1975 vs H2228 tested on the cells of one protocol only, then of the other;
  Spearman correlation of the two LFC vectors and overlap of the two top-200 lists, ranked by
  evidence (proba_de, ties by |lfc_mean|; Wilcoxon by |score|) or the genes called DE first by
  |lfc_mean| (the order of our ``rank_genes_groups`` layout; the same rule for every method).
- ``kang``: Kang IFN-beta PBMCs, stimulated vs control: ranks of 40 known ISGs (those among
  the HVGs) in each method's list of up-regulated genes.
- ``speed``: cells resampled (with replacement) to 10^4 / 10^5, H1975 vs the rest: seconds and
  peak memory above the start (RSS sampled every 5 ms) of a call after a warm-up call (so
  both reuse freed memory), equal n_samples.

Usage (2 CPU cores; one thread per method)::

    python benchmarks/bench_de.py --out bench_out/de --sizes 10000 100000 --cache bench_out/de_models

Writes ``<out>.md`` (the tables) and ``<out>_<section>.csv``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_nmf_online import PeakRSS  # noqa: E402

DATA = Path(os.environ.get("SCGEN_AE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BATCH = "_scgen_ae_batch"  # the column the scvi-tools bridge registers the batches under
RUN = dict(mode="change", delta=0.25, batch_correction=True)
N_SAMPLES = 5000
POPULATIONS = [("H1975", "CEL-seq2"), ("H2228", "Drop-seq")]


def load_data():
    import anndata as ad

    import scgen_ae as sa

    adata = ad.read_h5ad(DATA / "cellbench_3cl.h5ad")
    adata.obs["batch"] = adata.obs["batch"].astype(str)
    sa.pp.highly_variable(adata, n_top_genes=2000, batch_key="batch")
    sa.pp.drop_empty(adata)
    adata.obs[BATCH] = adata.obs["batch"].astype("category")
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str)
    return adata


def train(adata, seed: int, cache: Path | None):
    """(ours, scvi-tools) trained with ``seed``; reused from (or saved to) ``cache/seed<seed>``."""
    import scvi

    import scgen_ae as sa

    where = cache / f"seed{seed}" if cache else None
    if where and (where / "ours.npz").exists() and (where / "scvi").exists():
        return sa.VAE.load(where / "ours.npz"), scvi.model.SCVI.load(str(where / "scvi"), adata=adata)
    kw = dict(batch_key="batch", seed=seed, n_threads=1, progress=False)
    ours = sa.tl.vae(adata.copy(), **kw)
    theirs = sa.tl.vae(adata.copy(), backend="scvi-tools", **kw)
    if where:
        where.mkdir(parents=True, exist_ok=True)
        ours.save(where / "ours.npz")
        theirs.save(str(where / "scvi"), overwrite=True)
    return ours, theirs


def run_ours(model, adata, groupby, g1, g2, seed=0):
    import scgen_ae as sa

    df = sa.tl.differential_expression(model, adata, groupby=groupby, group1=g1, group2=g2, n_samples=N_SAMPLES,
                                       random_state=seed, **RUN)
    return df, df["is_de_fdr_0.05"]


def run_scvi(model, adata, groupby, g1, g2, seed=0):
    import scvi

    scvi.settings.seed = seed
    df = model.differential_expression(adata, groupby=groupby, group1=g1, group2=g2, fdr_target=0.05,
                                       n_samples_overall=N_SAMPLES, silent=True, **RUN)
    return df, df["is_de_fdr_0.05"]


def run_wilcoxon(adata, groupby, g1, g2):
    import scanpy as sc

    sub = adata.copy()
    sc.pp.normalize_total(sub, target_sum=1e4)
    sc.pp.log1p(sub)
    sub.obs[groupby] = sub.obs[groupby].astype("category")
    sc.tl.rank_genes_groups(sub, groupby, groups=[g1], reference=g2 or "rest", method="wilcoxon")
    df = sc.get.rank_genes_groups_df(sub, g1).set_index("names")
    df = df.rename(columns={"logfoldchanges": "lfc_mean"})
    return df, df["pvals_adj"] < 0.05


def calibration(adata, models, seeds) -> pd.DataFrame:
    """Share of genes called DE between two random halves of one population (all false)."""
    rows = []
    for line, protocol in POPULATIONS:
        pop = adata[(adata.obs["cell_type"] == line) & (adata.obs["batch"] == protocol)].copy()
        for seed in seeds:
            half = np.random.default_rng(seed).permutation(pop.n_obs) < pop.n_obs // 2
            pop.obs["split"] = np.where(half, "a", "b")
            runs = [("wilcoxon", "-", lambda: run_wilcoxon(pop, "split", "a", "b"))]
            for model_seed, (ours, theirs) in models.items():
                runs += [("ours", model_seed, lambda m=ours: run_ours(m, pop, "split", "a", "b", seed)),
                         ("scvi-tools", model_seed, lambda m=theirs: run_scvi(m, pop, "split", "a", "b", seed))]
            for method, model_seed, fn in runs:
                df, called = fn()
                # how far the strongest gene is from a call: its posterior expected FDR / BH-adjusted p
                min_q = df["pvals_adj"].min() if method == "wilcoxon" else 1.0 - df["proba_de"].max()
                rows.append(dict(population=f"{line} {protocol}", cells=pop.n_obs, split_seed=seed, method=method,
                                 model_seed=model_seed, called=int(called.sum()), share_pct=100 * called.mean(),
                                 min_q=min_q))
                print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def _top(df, called, ranking, n=200):
    """The first ``n`` genes: by evidence (proba_de, ties by |lfc_mean|; Wilcoxon: |score|), or
    the genes called DE first, by |lfc_mean| (the order of our rank_genes_groups layout)."""
    if ranking == "evidence":
        key = df["scores"].abs().to_numpy() if "scores" in df else df["proba_de"].to_numpy()
        order = np.lexsort((-df["lfc_mean"].abs().to_numpy(), -key))
    else:
        order = np.lexsort((-df["lfc_mean"].abs().to_numpy(), -called.to_numpy().astype(int)))
    return set(df.index[order[:n]])


def consistency(adata, models) -> pd.DataFrame:
    """H1975 vs H2228 within each protocol: agreement of the two results."""
    from scipy.stats import spearmanr

    runs = [("wilcoxon", "-", lambda a: run_wilcoxon(a, "cell_type", "H1975", "H2228"))]
    for model_seed, (ours, theirs) in models.items():
        runs += [("ours", model_seed, lambda a, m=ours: run_ours(m, a, "cell_type", "H1975", "H2228")),
                 ("scvi-tools", model_seed, lambda a, m=theirs: run_scvi(m, a, "cell_type", "H1975", "H2228"))]
    rows = []
    for method, model_seed, fn in runs:
        (df1, called1), (df2, called2) = (fn(adata[adata.obs["batch"] == p].copy()) for p in ("CEL-seq2", "Drop-seq"))
        df2, called2 = df2.loc[df1.index], called2.loc[df1.index]
        overlap = {r: len(_top(df1, called1, r) & _top(df2, called2, r)) / 200 for r in ("evidence", "called_by_lfc")}
        rows.append(dict(method=method, model_seed=model_seed,
                         spearman_lfc=spearmanr(df1["lfc_mean"], df2["lfc_mean"]).statistic,
                         top200_evidence=overlap["evidence"], top200_called_by_lfc=overlap["called_by_lfc"],
                         called_celseq=int(called1.sum()), called_dropseq=int(called2.sum())))
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


ISGS = ("ISG15 IFI6 IFIT1 IFIT2 IFIT3 IFIT5 MX1 MX2 OAS1 OAS2 OAS3 OASL ISG20 IFI44 IFI44L RSAD2 IFITM1 IFITM3 "
        "LY6E XAF1 STAT1 IRF7 HERC5 EPSTI1 CMPK2 IFI35 SAMD9L PLSCR1 BST2 TNFSF10 IFI16 SP110 PARP9 DDX58 IFIH1 "
        "USP18 GBP1 CXCL10 IFITM2 LAMP3").split()  # interferon-stimulated genes (type-I response)


def kang(seed: int, cache: Path | None) -> pd.DataFrame:
    """Kang IFN-beta PBMCs, stimulated vs control (the condition is biology: no batch key, one
    model of each kind, 2,000 HVGs): where the known ISGs rank among the up-regulated genes
    (genes called DE first, then by decreasing lfc_mean; the same rule for every method)."""
    import anndata as ad
    import scvi

    import scgen_ae as sa

    adata = ad.read_h5ad(DATA / "kang_ifnb_pbmc_subset.h5ad")
    adata.obs["condition"] = adata.obs["batch"].astype(str)
    sa.pp.highly_variable(adata, n_top_genes=2000)
    sa.pp.drop_empty(adata)
    where = cache / f"kang_seed{seed}" if cache else None
    if where and (where / "ours.npz").exists():
        ours, theirs = sa.VAE.load(where / "ours.npz"), scvi.model.SCVI.load(str(where / "scvi"), adata=adata)
    else:
        kw = dict(seed=seed, n_threads=1, progress=False)
        ours, theirs = sa.tl.vae(adata.copy(), **kw), sa.tl.vae(adata.copy(), backend="scvi-tools", **kw)
        if where:
            where.mkdir(parents=True, exist_ok=True)
            ours.save(where / "ours.npz")
            theirs.save(str(where / "scvi"), overwrite=True)
    isgs = [g for g in ISGS if g in adata.var_names]
    rows = []
    for method, fn in (("ours", lambda: run_ours(ours, adata, "condition", "stim", "ctrl")),
                       ("scvi-tools", lambda: run_scvi(theirs, adata, "condition", "stim", "ctrl")),
                       ("wilcoxon", lambda: run_wilcoxon(adata, "condition", "stim", "ctrl"))):
        df, called = fn()
        order = df.index[np.lexsort((-df["lfc_mean"].to_numpy(), -called.to_numpy().astype(int)))]
        rank = pd.Series(np.arange(1, len(order) + 1), index=order).loc[isgs]
        rows.append(dict(method=method, isgs_in_genes=len(isgs), isgs_top50=int((rank <= 50).sum()),
                         isgs_top100=int((rank <= 100).sum()), isg_median_rank=float(rank.median()),
                         isgs_called_up=int((called & (df["lfc_mean"] > 0)).loc[isgs].sum()), called=int(called.sum())))
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def speed(adata, ours, theirs, sizes, repeats) -> pd.DataFrame:
    """Median of ``repeats`` timed calls after one untimed warm-up call (first-call costs of
    torch and scvi-tools); the memory of the first timed call."""
    import gc

    rows = []
    for n in sizes:
        big = adata[np.random.default_rng(0).integers(0, adata.n_obs, n)].copy()
        big.obs_names_make_unique()
        for method, fn in (("ours", lambda: run_ours(ours, big, "cell_type", "H1975", None)),
                           ("scvi-tools", lambda: run_scvi(theirs, big, "cell_type", "H1975", None))):
            fn()
            seconds, mib = [], []
            for _ in range(repeats):
                gc.collect()
                t0 = time.perf_counter()
                with PeakRSS() as mem:
                    fn()
                seconds.append(time.perf_counter() - t0)
                mib.append(mem.mb)
            rows.append(dict(cells=n, method=method, seconds=float(np.median(seconds)), peak_mib=mib[0]))
            print(rows[-1], seconds, flush=True)
        del big
    table = pd.DataFrame(rows)
    pivot = table.pivot(index="cells", columns="method")
    ratio = pd.DataFrame({"speedup": pivot["seconds"]["scvi-tools"] / pivot["seconds"]["ours"],
                          "memory_ratio": pivot["peak_mib"]["scvi-tools"] / pivot["peak_mib"]["ours"].clip(lower=1)})
    return table.merge(ratio, left_on="cells", right_index=True)


def markdown(table: pd.DataFrame) -> str:
    def cell(x):
        return f"{x:.3g}" if isinstance(x, (float, np.floating)) else str(x)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * table.shape[1]]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench_out/de")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the random halves")
    parser.add_argument("--model-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sections", nargs="+", default=["calibration", "consistency", "kang", "speed"])
    parser.add_argument("--cache", type=Path, default=None, help="reuse (or save) the trained models here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    adata = load_data()
    t0 = time.perf_counter()
    models = {seed: train(adata, seed, args.cache) for seed in args.model_seeds}
    print(f"models ready in {time.perf_counter() - t0:.0f} s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    first = models[args.model_seeds[0]]
    sections = {"calibration": lambda: calibration(adata, models, args.seeds),
                "consistency": lambda: consistency(adata, models),
                "kang": lambda: kang(args.model_seeds[0], args.cache),
                "speed": lambda: speed(adata, *first, args.sizes, args.repeats)}
    md = []
    for name in args.sections:
        table = sections[name]()
        table.to_csv(f"{out}_{name}.csv", index=False)
        md.append(f"### {name}\n\n{markdown(table)}\n")
        if name in ("calibration", "consistency"):
            means = table.groupby("method", sort=False)[[c for c in table.columns if table[c].dtype.kind == "f"]].mean()
            md.append(f"means over seeds:\n\n{markdown(means.reset_index())}\n")
    Path(f"{out}.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
