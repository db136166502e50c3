#!/usr/bin/env python
"""By-hand benchmark for latent arithmetic (issue 7): scGen-style prediction on Kang,
scArches-style query mapping + label transfer on the 3-protocol CellBench file.

Every fit runs in its own fresh Python subprocess with one thread (torch and the
OMP/MKL/OpenBLAS variables set before anything is imported).

prediction (``kang_ifnb_pbmc_subset``, 2,000 seurat_v3 HVGs with ``batch_key="batch"``):
    cells are labelled with ``sa.pp.annotate_markers(adata, groupby="batch")`` (the
    annotation); the stimulated cells of one type are held out, ``sa.tl.vae`` is trained
    with ``batch_key=None`` on the rest, and ``sa.tl.predict`` predicts them from the
    type's control cells. R^2 (squared Pearson, scGen's ``reg_mean_plot``) of per-gene
    mean expression (``sa.tl.mean_expression``: log1p of mean counts per 10k, or mean log
    value for gaussian) against the held-out real cells, over all genes and over the
    type's top 100 DE genes (wilcoxon, stim vs ctrl, on the real log-normalised cells of
    that type). Baselines: "no change" (the type's control means) and "other types'
    shift" (control means + the average stim - ctrl mean shift of the other types).
    No peer runs here: scgen 2.1.0, the newest on PyPI, does not import with
    scvi-tools 1.4.2 (``scvi._compat`` and ``LossRecorder`` are gone).

mapping (``cellbench_3cl_3protocols_800genes``, all 799 genes): for each protocol as the
    query, a reference model is trained on the two others, the query is mapped, and
    ``sa.tl.transfer_labels`` transfers ``cell_type`` (the same kNN classifier for both
    tools). Ours: ``sa.tl.vae`` + ``VAE.map_query``. Peer: scvi-tools ``SCVI`` with the
    settings its scArches tutorial recommends (``encode_covariates=True``, layer norm, no
    batch norm, 2 layers, dropout 0.2) + ``SCVI.load_query_data`` (weight decay 0).
    Baseline ``--worker`` tool "pca": 10 PCs of the log-normalised joint data (no correction).
    Reported: accuracy, batch mixing of mapped and reference cells (kNN batch entropy
    and iLISI over the three protocols, ``sa.metrics``), the largest change of the
    reference cells' latent between reference and mapped model, and the seconds of the
    mapping step (best of ``--repeats`` runs, interleaved between tools).

Usage::

    python benchmarks/bench_latent.py --part all --out bench_out/latent
    python benchmarks/bench_latent.py --part mapping --repeats 1 --ref-epochs 5 --query-epochs 5  # smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

KANG = "kang_ifnb_pbmc_subset"
CELLBENCH = "cellbench_3cl_3protocols_800genes"


# ------------------------------------------------------------------ workers (fresh process each)

def _threads():
    import torch

    torch.set_num_threads(1)


def _kang(likelihood: str):
    import scanpy as sc

    import scgen_ae as sa

    a = sa.datasets.load(KANG)
    sa.pp.annotate_markers(a, groupby="batch")
    sc.pp.highly_variable_genes(a, flavor="seurat_v3", batch_key="batch", n_top_genes=2000, subset=True)
    sa.pp.drop_empty(a)
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)  # X: log-normalised (gaussian, DE genes); counts in layers["counts"]
    return a


def predict_worker(job: dict) -> dict:
    import time

    import numpy as np
    import scanpy as sc

    import scgen_ae as sa

    _threads()
    lik, ct = job["likelihood"], job["cell_type"]
    a = _kang(lik)
    layer = None if lik == "gaussian" else "counts"
    hold = ((a.obs["cell_type"] == ct) & (a.obs["batch"] == "stim")).to_numpy()
    train = a[~hold].copy()
    start = time.perf_counter()
    model = sa.tl.vae(train, batch_key=None, layer=layer, likelihood=lik, max_epochs=job["epochs"],
                      seed=job["seed"], n_threads=1, progress=False)
    seconds = time.perf_counter() - start
    pred = sa.tl.predict(model, a, condition_key="batch", ctrl="ctrl", stim="stim", cell_type_key="cell_type",
                         predict=ct, seed=job["seed"])
    means = sa.tl.response_means(a, pred, cell_type=ct, cell_type_key="cell_type")
    sub = a[(a.obs["cell_type"] == ct).to_numpy()].copy()
    sc.tl.rank_genes_groups(sub, "batch", groups=["stim"], reference="ctrl", method="wilcoxon")
    top = list(sub.uns["rank_genes_groups"]["names"]["stim"][:100])
    sel = np.isin(np.asarray(pred.var_names), top)
    scale = pred.uns["predict"]["scale"]
    X = a.X if scale == "log" else a.layers["counts"]
    shifts = []
    for other in pred.uns["predict"]["cell_types_used"]:
        rows = (a.obs["cell_type"] == other).to_numpy()
        m = {c: sa.tl.mean_expression(X[rows & (a.obs["batch"] == c).to_numpy()], scale) for c in ("ctrl", "stim")}
        shifts.append(m["stim"] - m["ctrl"])
    candidates = {"tl.predict": means["pred"], "no change": means["ctrl"],
                  "other types' shift": means["ctrl"] + np.mean(shifts, 0)}
    r2 = {name: [sa.tl.r_squared(means["stim"], y), sa.tl.r_squared(means["stim"][sel], y[sel])]
          for name, y in candidates.items()}
    return {"r2": r2, "fit_seconds": seconds, "epochs": len(model.history["train_loss"]),
            "n_ctrl": int(len(pred)), "n_stim_held_out": int(hold.sum())}


def _mixing(z_ref, z_q, b_ref, b_q):
    import numpy as np

    import scgen_ae as sa

    z = np.vstack([z_ref, z_q])
    b = np.concatenate([b_ref, b_q])
    side = np.r_[np.zeros(len(z_ref)), np.ones(len(z_q))]
    return {"batch_entropy": sa.metrics.batch_entropy(z, b), "ilisi": sa.metrics.ilisi(z, b),
            "ref_vs_query_entropy": sa.metrics.batch_entropy(z, side)}


def mapping_worker(job: dict) -> dict:
    import time

    import numpy as np

    import scgen_ae as sa

    _threads()
    a = sa.datasets.load(CELLBENCH)
    sa.pp.drop_empty(a)
    is_q = (a.obs["batch"] == job["query"]).to_numpy()
    ref, query = a[~is_q].copy(), a[is_q].copy()
    b_ref, b_q = ref.obs["batch"].astype(str).to_numpy(), query.obs["batch"].astype(str).to_numpy()
    if job["tool"] == "pca":  # the uncorrected baseline: 10 PCs of the log-normalised joint data
        import scanpy as sc

        joint = a.copy()
        sc.pp.normalize_total(joint, target_sum=1e4)
        sc.pp.log1p(joint)
        sc.pp.pca(joint, n_comps=10, random_state=job["seed"])
        z_ref, z_q = joint.obsm["X_pca"][~is_q], joint.obsm["X_pca"][is_q]
        ref_change, identical, ref_seconds, map_seconds, version = 0.0, True, 0.0, 0.0, "uncorrected PCA"
    elif job["tool"] == "ours":
        start = time.perf_counter()
        model = sa.tl.vae(ref, batch_key="batch", max_epochs=job["ref_epochs"], early_stopping=False,
                          seed=job["seed"], n_threads=1, progress=False)
        ref_seconds = time.perf_counter() - start
        start = time.perf_counter()
        mapped = model.map_query(query, batch_key="batch", max_epochs=job["query_epochs"], early_stopping=False,
                                 seed=job["seed"], n_threads=1, progress=False)
        map_seconds = time.perf_counter() - start
        z_ref_after = mapped.get_latent(ref)
        ref_change = float(np.abs(z_ref_after - ref.obsm["X_vae"]).max())
        identical = bool(np.array_equal(z_ref_after, ref.obsm["X_vae"]))
        z_ref, z_q = ref.obsm["X_vae"], query.obsm["X_vae"]
        version = sa.__version__
    else:
        import scvi

        scvi.settings.seed = job["seed"]
        scvi.settings.num_threads = 1
        ref.obs["batch"] = ref.obs["batch"].astype(str)
        query.obs["batch"] = query.obs["batch"].astype(str)
        scvi.model.SCVI.setup_anndata(ref, batch_key="batch")
        kw = dict(n_latent=10, n_hidden=128, n_layers=2, dropout_rate=0.2, encode_covariates=True,
                  use_layer_norm="both", use_batch_norm="none")
        start = time.perf_counter()
        model = scvi.model.SCVI(ref, **kw)
        model.train(max_epochs=job["ref_epochs"], enable_progress_bar=False, accelerator="cpu")
        ref_seconds = time.perf_counter() - start
        z_ref = model.get_latent_representation(ref)
        start = time.perf_counter()
        scvi.model.SCVI.prepare_query_anndata(query, model)
        qmodel = scvi.model.SCVI.load_query_data(query, model)
        qmodel.train(max_epochs=job["query_epochs"], plan_kwargs=dict(weight_decay=0.0),
                     enable_progress_bar=False, accelerator="cpu")
        map_seconds = time.perf_counter() - start
        z_q = qmodel.get_latent_representation(query)
        ref_q = ref.copy()
        scvi.model.SCVI.prepare_query_anndata(ref_q, qmodel)
        z_ref_after = qmodel.get_latent_representation(ref_q)
        ref_change = float(np.abs(z_ref_after - z_ref).max())
        identical = bool(np.array_equal(z_ref_after, z_ref))
        version = scvi.__version__
    ref.obsm["X_lat"], query.obsm["X_lat"] = np.asarray(z_ref), np.asarray(z_q)
    sa.tl.transfer_labels(query, reference=ref, label_key="cell_type", basis="X_lat")
    acc = float((query.obs["cell_type_transferred"].astype(str) == query.obs["cell_type"].astype(str)).mean())
    return {"accuracy": acc, "mean_uncertainty": float(query.obs["cell_type_transferred_uncertainty"].mean()),
            **_mixing(z_ref, z_q, b_ref, b_q), "ref_latent_max_change": ref_change, "ref_latent_identical": identical,
            "ref_seconds": ref_seconds, "map_seconds": map_seconds, "version": version}


# ------------------------------------------------------------------ orchestration

def run_job(job: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode:
        raise RuntimeError(f"job {job} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prediction_table(args) -> str:
    lines = ["| held out (stim) | likelihood | epochs | R² all genes: tl.predict / no change / other types' shift "
             "| R² top-100 DE: tl.predict / no change / other types' shift | beats both |", "|---|---|---|---|---|---|"]
    for ct in args.cell_types:
        for lik in args.likelihoods:
            res = run_job({"kind": "predict", "likelihood": lik, "cell_type": ct, "epochs": args.pred_epochs,
                           "seed": args.seed})
            r = res["r2"]
            cols = [" / ".join(f"{r[k][i]:.3f}" for k in ("tl.predict", "no change", "other types' shift"))
                    for i in (0, 1)]
            beats = all(r["tl.predict"][i] > max(r["no change"][i], r["other types' shift"][i]) for i in (0, 1))
            lines.append(f"| {ct} ({res['n_stim_held_out']} cells) | {lik} | {res['epochs']} | {cols[0]} | {cols[1]} "
                         f"| {'yes' if beats else '**no**'} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def mapping_table(args) -> str:
    results = {}
    for rep in range(args.repeats):
        for query in args.queries:
            for tool in ("ours", "scvi"):  # interleaved: both tools see the same load
                job = {"kind": "mapping", "tool": tool, "query": query, "ref_epochs": args.ref_epochs,
                       "query_epochs": args.query_epochs, "seed": args.seed}
                res = run_job(job)
                key = (query, tool)
                if key not in results:
                    results[key] = res
                for t in ("ref_seconds", "map_seconds"):
                    results[key][t] = min(results[key][t], res[t])
                print(query, tool, rep, {k: res[k] for k in ("accuracy", "map_seconds")}, flush=True)
    return _mapping_rows(results)


def _mapping_rows(results: dict) -> str:
    lines = ["| query | tool | accuracy | uncertainty (mean) | batch entropy | iLISI | ref-vs-query entropy "
             "| ref latent max change | map s (best) | ref train s (best) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (query, tool), r in results.items():
        name = {"ours": "scgen_ae", "pca": "uncorrected PCA (10 PCs)"}.get(tool, f"scvi-tools {r['version']}")
        change = "0 (bit-identical)" if r["ref_latent_identical"] else f"{r['ref_latent_max_change']:.2e}"
        if tool == "pca":
            lines.append(f"| {query} | {name} | {r['accuracy']:.3f} | {r['mean_uncertainty']:.3f} "
                         f"| {r['batch_entropy']:.3f} | {r['ilisi']:.3f} | {r['ref_vs_query_entropy']:.3f} | - | - | - |")
            continue
        lines.append(f"| {query} | {name} | {r['accuracy']:.3f} | {r['mean_uncertainty']:.3f} | {r['batch_entropy']:.3f} "
                     f"| {r['ilisi']:.3f} | {r['ref_vs_query_entropy']:.3f} | {change} | {r['map_seconds']:.1f} "
                     f"| {r['ref_seconds']:.1f} |")
    return "\n".join(lines)


def table_from_log(path: str) -> str:
    """The mapping table from the raw per-job results (metrics of the first run, best seconds of all)."""
    results = {}
    for line in Path(path).read_text().splitlines():
        rec = json.loads(line)
        job, res = rec["job"], rec["result"]
        if job["kind"] != "mapping":
            continue
        key = (job["query"], job["tool"])
        if key not in results:
            results[key] = dict(res, runs=0)
        results[key]["runs"] += 1
        for t in ("ref_seconds", "map_seconds"):
            results[key][t] = min(results[key][t], res[t])
    return _mapping_rows(dict(sorted(results.items())))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--part", choices=["prediction", "mapping", "all"], default="all")
    p.add_argument("--cell-types", nargs="+", default=["CD14_mono", "B"])
    p.add_argument("--likelihoods", nargs="+", default=["zinb", "nb", "gaussian"])
    p.add_argument("--pred-epochs", type=int, default=100)
    p.add_argument("--queries", nargs="+", default=["10x", "CEL-seq2", "Drop-seq"])
    p.add_argument("--ref-epochs", type=int, default=100)
    p.add_argument("--query-epochs", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_out/latent")
    p.add_argument("--from-log", help="print the mapping table from a latent_jobs.jsonl file and exit")
    args = p.parse_args()
    if args.from_log:
        print(table_from_log(args.from_log))
        return
    if args.worker:
        job = json.loads(args.worker)
        res = predict_worker(job) if job["kind"] == "predict" else mapping_worker(job)
        # every job's raw result is kept, so an interrupted run keeps what it measured
        log = Path(__file__).resolve().parent.parent / "bench_out" / "latent_jobs.jsonl"
        log.parent.mkdir(exist_ok=True)
        with log.open("a") as fh:
            fh.write(json.dumps({"job": job, "result": res}) + "\n")
        print(json.dumps(res))
        return
    parts = []
    if args.part in ("mapping", "all"):
        parts.append("### Query mapping (CellBench)\n\n" + mapping_table(args))
    if args.part in ("prediction", "all"):
        parts.append("### Prediction (Kang)\n\n" + prediction_table(args))
    text = "\n\n".join(parts)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
