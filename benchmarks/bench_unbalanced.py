#!/usr/bin/env python
"""By-hand benchmark: integration when batches do not hold the same cell types.

Unbalanced designs are built from the labelled shared files by removing cell types from
some batches (real cells only, nothing simulated):

- ``1type``    one type present in a single batch;
- ``2types``   two types, each missing from a different batch;
- ``subset``   one batch holding a strict subset of the types (3-protocol file only: with two
  batches it is the ``1type`` design);
- ``groups``   groups of batches with no type in common: the 3-protocol CellBench lines and the
  PBMC chemistries on their shared genes (PBMCs labelled by ``sa.pp.annotate_markers``);
- ``balanced`` the file as it is (the PBMC chemistries and Kang, which have no labels, only
  this way, labelled by ``sa.pp.annotate_markers``).

Every method embeds the same cells (2,000 seurat_v3 HVGs per design, all genes where a file
has fewer); each embedding is scored with ``sa.tl.score_integration`` (scIB Bio, Batch, Total,
unscaled) and by the kNN label purity (15 neighbours, self excluded) of the *batch-unique*
types: the cell types that some batches lack. ``purity_min`` is the lowest of those types'
mean purities, the figure that drops when a method merges a type into others.

Usage (timings: idle machine only)::

    python benchmarks/bench_unbalanced.py --seeds 0 1 --out bench_out/unbalanced
    python benchmarks/bench_unbalanced.py --designs cellbench_3cl:1type --methods ours:mmd_weight=0 pca

A method is ``ours`` (``sa.tl.vae`` defaults), ``ours:key=value,...`` (other arguments),
``scvi`` (scvi-tools SCVI, its default epochs), ``harmony`` (harmonypy on 50 PCs), ``pca``
(uncorrected), ``remove_batch`` (``sa.tl.vae`` without batch, then ``sa.tl.remove_batch``
without labels), ``nmf`` / ``nmf:batch`` and ``lda`` / ``lda:batch`` (plain / batch-aware fits).
Writes ``<out>.csv`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATA_DIR = Path(os.environ.get("SCGEN_AE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CB2 = "cellbench_3cl"
CB3 = "cellbench_3cl_3protocols_800genes"
PBMC = "pbmc_10x_chemistries"
KANG = "kang_ifnb_pbmc_subset"
# files without labels, checked balanced only: labelled by sa.pp.annotate_markers (grouped by
# this obs column first: Kang's batches are ctrl / stim, whose markers shift)
MARKER_LABELLED = {PBMC: None, KANG: "batch"}
# design -> {batch: cell types removed from it}
REMOVALS = {
    (CB2, "balanced"): {},
    (CB2, "1type"): {"Drop-seq": ["HCC827"]},
    (CB2, "2types"): {"CEL-seq2": ["H1975"], "Drop-seq": ["H2228"]},
    (CB3, "balanced"): {},
    (CB3, "1type"): {"CEL-seq2": ["HCC827"], "Drop-seq": ["HCC827"]},
    (CB3, "2types"): {"CEL-seq2": ["H1975"], "Drop-seq": ["H2228"]},
    (CB3, "subset"): {"CEL-seq2": ["H2228", "HCC827"]},
}
DESIGNS = ([f"{d}:{k}" for d, k in REMOVALS] + [f"{CB3}+{PBMC}:groups"]
           + [f"{name}:balanced" for name in MARKER_LABELLED])
N_HVG = 2000
N_NEIGHBOURS = 15


def _read(name):
    import anndata as ad

    adata = ad.read_h5ad(DATA_DIR / f"{name}.h5ad")
    adata.obs["batch"] = adata.obs["batch"].astype(str)
    return adata


def _marker_labelled(name):
    import scgen_ae as sa

    adata = _read(name)
    sa.pp.annotate_markers(adata, groupby=MARKER_LABELLED[name], key_added="cell_type")
    adata.obs["cell_type"] = "PBMC " + adata.obs["cell_type"].astype(str)
    return adata


def build_design(design: str):
    """The design's AnnData: raw counts in X and layers['counts'], obs 'batch' and 'cell_type'."""
    import anndata as ad
    import scanpy as sc

    files, kind = design.split(":")
    if kind == "groups":
        cb, pbmc = _read(CB3), _marker_labelled(PBMC)
        genes = cb.var_names.intersection(pbmc.var_names)
        adata = ad.concat([cb[:, genes], pbmc[:, genes]], join="inner")
        adata.obs_names_make_unique()
    elif files in MARKER_LABELLED:
        adata = _marker_labelled(files)
    else:
        adata = _read(files)
        keep = np.ones(adata.n_obs, dtype=bool)
        for batch, types in REMOVALS[(files, kind)].items():
            keep &= ~((adata.obs["batch"] == batch) & adata.obs["cell_type"].isin(types)).to_numpy()
        adata = adata[keep].copy()
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str).astype("category")
    adata.obs["batch"] = adata.obs["batch"].astype("category")
    sc.pp.filter_genes(adata, min_cells=3)
    sc.pp.filter_cells(adata, min_counts=1)  # the groups design's shared genes leave a few PBMCs empty
    if adata.n_vars > N_HVG:
        sc.pp.highly_variable_genes(adata, n_top_genes=N_HVG, flavor="seurat_v3", batch_key="batch", subset=True)
    adata.layers["counts"] = adata.X.copy()
    return adata


def batch_unique_types(adata) -> list[str]:
    """Cell types absent (fewer than 3 cells) from at least one batch."""
    table = pd.crosstab(adata.obs["cell_type"], adata.obs["batch"])
    return sorted(table.index[(table < 3).any(axis=1)])


def knn_purity(embedding: np.ndarray, labels: np.ndarray, types, k: int = N_NEIGHBOURS) -> dict:
    """Mean share of each cell's ``k`` nearest neighbours (self excluded) with its own label, per type."""
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(embedding).kneighbors(embedding, return_distance=False)[:, 1:]
    same = (labels[idx] == labels[:, None]).mean(1)
    return {t: float(same[labels == t].mean()) for t in types}


def _lognorm_pca(adata, n_comps=50):
    import scanpy as sc

    tmp = adata.copy()
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    sc.pp.pca(tmp, n_comps=min(n_comps, tmp.n_vars - 1, tmp.n_obs - 1), random_state=0)
    return np.asarray(tmp.obsm["X_pca"])


def _parse(method: str) -> tuple[str, dict]:
    name, _, rest = method.partition(":")
    kwargs = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        kwargs[key] = value if not value else _literal(value)
    return name, kwargs


def _literal(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


#: method -> what tl.vae's composition check (Leiden clusters of the latent, no labels) found on its last fit
DIAGNOSIS: dict = {}


def _diagnosis(record: dict) -> str:
    """``balanced``, or how many clusters some batch lacks and the share of cells in them; with
    ``mmd_mnn_k="auto"`` also the alignment it chose."""
    comp = record.get("composition")
    found = ("balanced" if comp is None or len(comp["missing_group"]) == 0 else
             f"{len(set(comp['missing_group']))} clusters ({100 * float(comp['share_affected']):.0f} %)")
    alignment = record.get("alignment")  # mmd_mnn_k="auto": what it trained with
    return found if alignment is None else f"{found}; auto used {alignment['used']}"


def embed(adata, method: str, seed: int) -> np.ndarray:
    """One method's embedding of ``adata`` (fitted with ``seed``)."""
    import scgen_ae as sa

    name, kwargs = _parse(method)
    if name == "pca":
        return _lognorm_pca(adata)
    if name == "harmony":
        import harmonypy

        ho = harmonypy.run_harmony(_lognorm_pca(adata), adata.obs, ["batch"], random_state=seed, verbose=False)
        z = np.asarray(ho.Z_corr)
        return z.T if z.shape[0] != adata.n_obs else z
    if name == "ours":
        a = adata.copy()
        sa.tl.vae(a, batch_key="batch", layer="counts", seed=seed, progress=False, **kwargs)
        DIAGNOSIS[method] = _diagnosis(a.uns["vae"])
        return a.obsm["X_vae"]
    if name == "remove_batch":  # scGen: a model without batch, then the label-free latent shift
        a = adata.copy()
        model = sa.tl.vae(a, layer="counts", seed=seed, progress=False, **kwargs)
        sa.tl.remove_batch(model, a, batch_key="batch")
        return a.obsm["X_vae_corrected"]
    if name == "scvi":
        import scvi

        scvi.settings.seed = seed
        a = adata.copy()
        scvi.model.SCVI.setup_anndata(a, layer="counts", batch_key="batch")
        model = scvi.model.SCVI(a, **kwargs)
        model.train(enable_progress_bar=False)
        return model.get_latent_representation()
    if name in ("nmf", "lda"):
        a = adata.copy()
        batch = {"batch_key": "batch"} if kwargs.pop("batch", False) else {}
        front = sa.tl.nmf if name == "nmf" else sa.tl.lda
        front(a, layer="counts", seed=seed, **batch, **kwargs)
        key = "X_nmf" if name == "nmf" else "X_lda"
        return a.obsm[key]
    raise SystemExit(f"unknown method {method!r}")


def score(adata, embeddings: dict) -> pd.DataFrame:
    import scgen_ae as sa

    a = adata.copy()
    keys = {}
    for i, (method, z) in enumerate(embeddings.items()):
        keys[method] = f"X_m{i}"
        a.obsm[keys[method]] = np.asarray(z, dtype=np.float32)
    a.obsm["X_pca"] = _lognorm_pca(a).astype(np.float32)
    table = sa.tl.score_integration(a, bases=list(keys.values()), batch_key="batch", label_key="cell_type",
                                    layer="counts", neighbors="exact")
    return table.rename(index={v: k for k, v in keys.items()})


def run(designs, methods, seeds) -> pd.DataFrame:
    rows = []
    for design in designs:
        adata = build_design(design)
        unique = batch_unique_types(adata)
        labels = adata.obs["cell_type"].to_numpy().astype(str)
        print(f"# {design}: {adata.n_obs} cells x {adata.n_vars} genes, batch-unique types {unique}", flush=True)
        for seed in seeds:
            embeddings, seconds = {}, {}
            for method in methods:
                start = time.perf_counter()
                embeddings[method] = embed(adata, method, seed)
                seconds[method] = time.perf_counter() - start
            scores = score(adata, embeddings)
            for method, z in embeddings.items():
                purity = knn_purity(np.asarray(z), labels, unique)
                rows.append({"design": design, "seed": seed, "method": method, "seconds": seconds[method],
                             "Bio": scores.loc[method, "Bio conservation"],
                             "Batch": scores.loc[method, "Batch correction"],
                             "Total": scores.loc[method, "Total"],
                             "purity_min": min(purity.values()) if purity else np.nan,
                             "purity": "; ".join(f"{t} {p:.3f}" for t, p in purity.items()),
                             "diagnosis": DIAGNOSIS.pop(method, "")})
                print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--designs", nargs="+", default=DESIGNS)
    parser.add_argument("--methods", nargs="+", default=["ours", "scvi", "harmony", "pca"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench_out/unbalanced")
    args = parser.parse_args()
    import torch

    import scgen_ae as sa

    torch.set_num_threads(args.threads)
    sa.settings.n_threads = args.threads  # tl.vae sets torch's threads itself (every core unless told)
    table = run(args.designs, args.methods, args.seeds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(f"{args.out}.csv", index=False)
    mean = table.groupby(["design", "method"], sort=False)[["Bio", "Batch", "Total", "purity_min", "seconds"]].mean()
    Path(f"{args.out}.md").write_text(mean.round(3).to_string())
    print(mean.round(3).to_string())


if __name__ == "__main__":
    main()
