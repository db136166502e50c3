#!/usr/bin/env python
"""By-hand benchmark: ``sa.tl.lda`` against sklearn's ``LatentDirichletAllocation`` and
scvi-tools' ``AmortizedLDA`` on the shared real data sets (issue 6).

Same data preparation and held-out split as ``bench_vae.py`` (its ``_prepare``: 2,000
seurat_v3 HVGs with ``batch_key="batch"``, all genes when there are at most 2,000; 10 %
of the cells held out with the split ``sa.tl.lda`` draws for ``seed=0``). Every fit runs
in a fresh subprocess with one thread (torch and the OMP/MKL/OpenBLAS variables), and
the tools are interleaved ``--repeats`` times (sklearn, ours, ours, ...): the machine is
shared, so the table reports the best time of the repeats.

Tools (k = ``--k`` topics, 10 by default):

- ``sklearn``: ``LatentDirichletAllocation(learning_method="batch", max_iter=10)`` on counts
  (the issue's setting), fitted on the training cells.
- ``amortized``: scvi-tools ``AmortizedLDA(n_topics=k)``, 100 epochs, fitted on the training cells.
- ``classic``: ``sa.tl.lda(method="classic")`` (batch VB, its default 20 EM iterations, each from a random gamma).
- ``prodlda``: ``sa.tl.lda()`` without batch; ``prodlda_batch``: ``sa.tl.lda(batch_key="batch")``.

Time = everything a user waits for to get the topic proportions of *all* cells: fit on
the training cells plus the transform of all cells (sklearn and AmortizedLDA: fit, then
transform of all cells; ProdLDA: ``tl.lda`` on the training cells, then
``model.transform`` of all cells; classic: ``tl.lda(validation_fraction=0)`` on the
training cells, whose proportions it writes, then ``model.transform`` of the held-out ones).

Held-out perplexity, the same definition for every tool: on the held-out cells (never
used in fitting), each tool infers the topic proportions theta_c of a cell from that
cell's counts with its own inference (sklearn ``transform``, AmortizedLDA
``get_latent_representation``, ours ``predictive``) and predicts the cell's gene
distribution p_c (LDA: theta_c @ normalised topic-gene matrix; ProdLDA:
softmax(theta_c beta + background)); perplexity = exp(- sum_cg x_cg log p_cg / sum_cg x_cg),
computed by one function (``scgen_ae.models.topic.perplexity_from_probs``) for all.

scIB: ``sa.tl.score_integration`` on the proportions of all cells from the first repeat (seed 0) (unscaled Total =
0.6 Bio + 0.4 Batch). Kang and the PBMC chemistries have no labels in the file: they get
coarse marker-derived ones (``sa.pp.annotate_markers``, as in ``bench_vae.py``).

Usage::

    python benchmarks/bench_lda.py                                  # all data sets, 3 repeats
    python benchmarks/bench_lda.py --datasets cellbench_3cl --repeats 1 --no-score   # smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vae import (BATCH_KEY, DATASETS, LABEL_KEY, QUIET_ENV, THREAD_ENV, _worker_start,  # noqa: E402
                       _fmt, _peak_rss_mb, _prepare)

TOOLS = ["sklearn", "amortized", "classic", "prodlda", "prodlda_batch"]


# --------------------------------------------------------------------------- worker (one fit per process)

def _worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    attempts = _worker_start(1)
    import numpy as np
    import torch

    import anndata as ad

    adata = ad.read_h5ad(spec["data"])
    split = np.load(spec["split"])
    fit = {"sklearn": _fit_sklearn, "amortized": _fit_amortized}.get(spec["tool"], _fit_ours)
    # each tool's imports happen before the clock starts (scanpy / lightning / pyro take seconds)
    if spec["tool"] == "sklearn":
        import sklearn.decomposition  # noqa: F401
    elif spec["tool"] == "amortized":
        import scvi  # noqa: F401
    import scgen_ae  # noqa: F401  (every worker uses its perplexity function afterwards)
    start = time.perf_counter()
    theta, probs_val = fit(adata, spec, split["train"], split["validation"])
    seconds = time.perf_counter() - start

    from scgen_ae.data import to_csr32
    from scgen_ae.models.topic import perplexity_from_probs

    ppl = perplexity_from_probs(to_csr32(adata.X[split["validation"]]), probs_val)
    np.save(spec["embedding"], np.asarray(theta, dtype=np.float32))
    Path(spec["result"]).write_text(json.dumps({
        "seconds": seconds, "heldout_perplexity": ppl, "peak_rss_mb": _peak_rss_mb(),
        "network_attempts": len(attempts), "torch_threads": torch.get_num_threads()}))


def _fit_sklearn(adata, spec, train_idx, val_idx):
    from sklearn.decomposition import LatentDirichletAllocation

    X = adata.X.tocsr()
    model = LatentDirichletAllocation(spec["k"], learning_method="batch", max_iter=10, random_state=spec["seed"])
    model.fit(X[train_idx])
    theta = model.transform(X)
    topics = model.components_ / model.components_.sum(1, keepdims=True)
    return theta, theta[val_idx] @ topics


def _fit_amortized(adata, spec, train_idx, val_idx):
    import logging

    import scvi

    for name in ("scvi", "lightning", "lightning.pytorch", "lightning.fabric", "pyro"):
        logging.getLogger(name).setLevel(logging.ERROR)
    scvi.settings.verbosity = logging.ERROR
    scvi.settings.dl_num_workers = 0
    scvi.settings.seed = spec["seed"]
    import torch

    torch.set_num_threads(1)
    train = adata[train_idx].copy()
    scvi.model.AmortizedLDA.setup_anndata(train)
    model = scvi.model.AmortizedLDA(train, n_topics=spec["k"])
    model.train(max_epochs=100, enable_progress_bar=False, logger=False, enable_checkpointing=False)
    scvi.model.AmortizedLDA.setup_anndata(adata)
    theta = model.get_latent_representation(adata).to_numpy()
    topics = model.get_feature_by_topic().to_numpy().T  # (k, genes), rows sum to 1
    topics = topics / topics.sum(1, keepdims=True)
    return theta, theta[val_idx] @ topics


def _fit_ours(adata, spec, train_idx, val_idx):
    import numpy as np

    import scgen_ae as sa

    kwargs = dict(n_topics=spec["k"], seed=spec["seed"], n_threads=1, progress=False)
    kwargs.update({"classic": dict(method="classic"), "prodlda": {},
                   "prodlda_batch": dict(batch_key=BATCH_KEY)}[spec["tool"]])
    if spec["tool"] == "classic":
        # batch VB has no early stopping: fitted on exactly the peers' training cells
        # (validation_fraction=0); their proportions come from the fit, as in tl.lda on a
        # user's data, the held-out cells' from a cold E-step (transform)
        train = adata[train_idx].copy()
        model = sa.tl.lda(train, validation_fraction=0.0, **kwargs)
        theta = np.zeros((adata.n_obs, spec["k"]), dtype=np.float32)
        theta[train_idx] = train.obsm["X_lda"]
        theta[val_idx] = model.transform(adata[val_idx])
        return theta, theta[val_idx] @ model.topic_gene_matrix().T  # as for sklearn
    # fitted on the training cells like the peers (tl.lda holds 10 % of those out again for
    # its early stopping: it trains on fewer cells than they do); proportions of all cells
    model = sa.tl.lda(adata[train_idx].copy(), **kwargs)
    return model.transform(adata), model.predictive(adata[val_idx])


# --------------------------------------------------------------------------- driver

def _run(spec: dict, workdir: Path, timeout: float) -> dict:
    tag = f"{spec['dataset']}_{spec['tool']}_r{spec['repeat']}"
    spec = dict(spec, result=str(workdir / f"{tag}.json"), embedding=str(workdir / f"{tag}.npy"))
    path = workdir / f"{tag}_spec.json"
    path.write_text(json.dumps(spec))
    env = dict(os.environ, **QUIET_ENV, **{k: "1" for k in THREAD_ENV})
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", str(path)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        print(f"[bench_lda] {tag} FAILED:\n{(proc.stdout + proc.stderr)[-3000:]}", file=sys.stderr, flush=True)
        return {"status": "failed"}
    return dict(json.loads(Path(spec["result"]).read_text()), status="ok", embedding=spec["embedding"])


def _markdown(df) -> str:
    lines = ["| dataset | cells × genes | tool | best s (of n) | speed-up vs sklearn | held-out perplexity, mean (range) | "
             "scIB Total | Bio | Batch |", "|---|---|---|---|---|---|---|---|---|"]
    for name, g in df.groupby("dataset", sort=False):
        sk = g.loc[g.tool == "sklearn", "best_seconds"]
        for _, r in g.iterrows():
            ratio = sk.iloc[0] / r.best_seconds if len(sk) and r.tool != "uncorrected PCA" else float("nan")
            lines.append(f"| {name} | {r.n_cells} × {r.n_genes} | {r.tool} | {_fmt(r.best_seconds)} ({r.n_runs}) | "
                         f"{_fmt(ratio, 1)} | {_fmt(r.perplexity, 1)} ({r.get('perplexity_range', '')}) | {_fmt(r.get('total'), 3)} | "
                         f"{_fmt(r.get('bio'), 3)} | {_fmt(r.get('batch'), 3)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--tools", nargs="+", default=TOOLS, choices=TOOLS)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--amortized-repeats", type=int, default=1, help="AmortizedLDA is slow: fewer repeats")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-score", action="store_true")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--out", type=Path, default=Path("bench_out/bench_lda"))
    parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        _worker(args._worker)
        return 0
    import numpy as np
    import pandas as pd

    args.out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench_lda_"))
    rows = []
    for name in args.datasets:
        small, path, split, _, labels = _prepare(name, workdir, args.seed)
        runs = {t: [] for t in args.tools}
        for rep in range(args.repeats):
            for tool in args.tools:
                if tool == "amortized" and rep >= args.amortized_repeats:
                    continue
                # a new seed per repeat: held-out perplexity varies with the initialisation by
                # several percent, so the table reports its mean (and range) over the repeats
                res = _run(dict(dataset=name, tool=tool, repeat=rep, data=str(path), split=str(split), k=args.k,
                                seed=args.seed + rep), workdir, args.timeout)
                print(f"[bench_lda] {name} {tool} run {rep + 1}: {_fmt(res.get('seconds'))} s, "
                      f"held-out perplexity {_fmt(res.get('heldout_perplexity'), 1)}", flush=True)
                if res["status"] == "ok":
                    runs[tool].append(res)
        ds = []
        for tool, rs in runs.items():
            if rs:
                ds.append(dict(dataset=name, n_cells=small.n_obs, n_genes=small.n_vars, labels=labels, tool=tool, n_runs=len(rs),
                               best_seconds=min(r["seconds"] for r in rs),
                               all_seconds=";".join(f"{r['seconds']:.2f}" for r in rs),
                               perplexity=float(np.mean([r["heldout_perplexity"] for r in rs])),
                               perplexity_range=f"{min(r['heldout_perplexity'] for r in rs):.1f}-"
                                                f"{max(r['heldout_perplexity'] for r in rs):.1f}", peak_rss_mb=max(r["peak_rss_mb"] for r in rs),
                               network_attempts=sum(r["network_attempts"] for r in rs), embedding=rs[0]["embedding"]))
        if not args.no_score and ds:
            import scgen_ae as sa

            for r in ds:
                small.obsm[r["tool"]] = np.load(r["embedding"])
            has_labels = LABEL_KEY in small.obs
            scores = sa.tl.score_integration(small, bases=[r["tool"] for r in ds] + ["X_pca"], batch_key=BATCH_KEY,
                                             label_key=LABEL_KEY if has_labels else None)
            ds.append(dict(dataset=name, n_cells=small.n_obs, n_genes=small.n_vars, tool="uncorrected PCA",
                           n_runs=0, best_seconds=float("nan"), perplexity=float("nan"), perplexity_range="",
                           embedding="X_pca"))
            for r in ds:
                key = "X_pca" if r["tool"] == "uncorrected PCA" else r["tool"]
                s = scores.loc[key]
                r.update(total=s["Total"], bio=s["Bio conservation"], batch=s["Batch correction"])
        rows += ds
        pd.DataFrame(rows).drop(columns=["embedding"]).to_csv(args.out.with_suffix(".csv"), index=False)
    df = pd.DataFrame(rows).drop(columns=["embedding"])
    md = _markdown(df)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
