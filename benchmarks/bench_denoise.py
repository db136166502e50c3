#!/usr/bin/env python
"""By-hand benchmark: ``sa.tl.denoise`` vs scvi-tools' ``SCVI.get_normalized_expression`` on
held-out counts of the shared real data sets.

Protocol (issue 5): 2,000 seurat_v3 HVGs on the counts (``batch_key="batch"``; a data set
with at most 2,000 genes keeps all), then a random 10 % of the non-zero counts are set to
zero (:func:`scgen_ae.tl.holdout_nonzeros`, seed 0). Cells and genes left without counts
are dropped for both tools and their hidden entries predicted as 0 (no data set here loses
any at 10 %). Both tools train on the same corrupted matrix, with ``batch_key="batch"``,
and predict expected counts at the corrupted cell's observed library size:
``layers["denoised"]`` of ``sa.tl.denoise`` (its defaults), and scVI's
``get_normalized_expression(library_size=1)`` x library (ZINB, its default architecture,
100 epochs, batch size 128). Scores: :func:`scgen_ae.tl.heldout_errors` on the hidden
entries; the gene-share baseline (:func:`scgen_ae.tl.gene_share_baseline`) alongside.

Held-out negative log-likelihood (nats per hidden entry; a proper score, unlike the median
error): ours, ``model.entry_log_prob`` (the denoiser's own ZINB at each hidden entry, the
corrupted cell's library); scVI, its own ZINB (``px.mu``, ``px.theta``, ``px.zi_logits`` of its
generative model) decoded from the posterior mean of z, scored with
:func:`scgen_ae.tl.heldout_nll`; the baseline, a Poisson with the gene-share mean. The
mean absolute error of scVI's posterior-mean ``px.mu`` is reported beside it (``mean AE pm``):
``get_normalized_expression`` decodes one sample of z by default.

How low can the median go? Two ceilings per data set, one fit each:

- **oracle**: ``sa.tl.denoise`` (defaults, but ``n_latent=32``) trained on the *clean*
  matrix, so the hidden counts are in its input and its loss; predictions rescaled to
  the corrupted library.
- **Poisson floor**: counts drawn as Poisson(oracle's expected counts) for every entry, a
  random 10 % of their non-zeros hidden, each predicted by its exact rate: the median
  error of a predictor that knows every cell's true expression, with the least noise
  counts can have. A mean predictor (``layers["denoised"]`` is expected counts) cannot
  expect to beat it on data of this rate structure.

Every fit runs in its own fresh subprocess with 1 thread (torch and the OMP/MKL variables);
tools alternate (ours, scvi, ours, scvi, ...) for ``--repeats`` rounds, and the best fit
time is reported, because the machine is shared. Fit time: ours, the training loop
(``history["seconds"]``, validation included); scvi, the ``train()`` call (validation
included). Wall: the whole call from the loaded AnnData to the predictions, for both.

Usage::

    python benchmarks/bench_denoise.py --repeats 3 --out bench_out/denoise
    python benchmarks/bench_denoise.py --datasets cellbench_3cl --repeats 1 --scvi-epochs 2   # smoke test
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
from bench_vae import DATA_DIR, DATASETS, QUIET_ENV, THREAD_ENV, _worker_start  # noqa: E402

BATCH_KEY = "batch"


def _worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    attempts = _worker_start(1)
    import numpy as np

    import anndata as ad

    adata = ad.read_h5ad(spec["data"])
    held = np.load(spec["heldout"])
    start = time.perf_counter()
    pred_full, fit_s, epochs = (_fit_scvi if spec["tool"] == "scvi" else _fit_ours)(adata, spec)
    wall = time.perf_counter() - start
    result = {"fit_seconds": fit_s, "wall_seconds": wall, "epochs": epochs, "network_attempts": len(attempts)}
    if spec["tool"] == "oracle":
        result["floor"] = _poisson_floor(np.asarray(pred_full, dtype=np.float64), int(spec["seed"]))
        pred_full = pred_full * held["library_ratio"][:, None]  # at the corrupted library, like the others
    pred = pred_full[held["rows"], held["cols"]]
    if spec["tool"] == "scgen_ae":
        result["nll"] = float(-_MODEL[0].entry_log_prob(adata, held["rows"], held["cols"], held["truth"]).mean())
    elif spec["tool"] == "scvi":
        result.update(_scvi_heldout(_MODEL[0], adata, held))
    np.save(spec["prediction"], pred.astype(np.float64))
    Path(spec["result"]).write_text(json.dumps(result))


_MODEL = []  # the worker's fitted model, for the held-out likelihood


def _scvi_heldout(model, adata, held) -> dict:
    """scVI's ZINB at the hidden entries, decoded from the posterior mean of z: NLL and MAE."""
    import numpy as np
    import torch

    import scgen_ae as sa

    module = model.module.eval()
    mu, theta, zi = [], [], []
    with torch.no_grad():
        for tensors in model._make_data_loader(adata=adata, batch_size=256):
            inference = module.inference(**module._get_inference_input(tensors))
            gen_in = module._get_generative_input(tensors, inference)
            gen_in["z"] = inference["qz"].loc
            px = module.generative(**gen_in)["px"]
            mu.append(px.mu.numpy())
            theta.append(np.broadcast_to(px.theta.numpy(), px.mu.shape))
            zi.append(px.zi_logits.numpy())
    r, c, truth = held["rows"], held["cols"], held["truth"]
    mu, theta, zi = (np.concatenate(a)[r, c].astype(np.float64) for a in (mu, theta, zi))
    return {"nll": sa.tl.heldout_nll(truth, mu, dispersion=theta, dropout_logits=zi),
            "mean_ae_pm": float(np.abs(truth - mu).mean())}


def _poisson_floor(rates, seed: int) -> dict:
    """Held-out errors of the exact rates on Poisson(rates) counts, 10 % of their non-zeros hidden."""
    import numpy as np

    import scgen_ae as sa

    rng = np.random.default_rng(seed + 1)
    counts = rng.poisson(rates).ravel()
    nonzero = np.flatnonzero(counts)
    hidden = nonzero[rng.random(nonzero.size) < 0.1]
    return sa.tl.heldout_errors(counts[hidden], rates.ravel()[hidden])


def _fit_ours(adata, spec):
    import scgen_ae as sa

    kwargs = dict(batch_key=BATCH_KEY, n_threads=1, progress=False, seed=int(spec["seed"]))
    kwargs.update(json.loads(spec.get("ours_kwargs") or "{}"))
    model = sa.tl.denoise(adata, **kwargs)
    _MODEL.append(model)
    return adata.layers["denoised"], float(model.history["seconds"]), len(model.history["train_loss"])


def _fit_scvi(adata, spec):
    import logging

    import numpy as np
    import scvi
    import torch

    for name in ("scvi", "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    scvi.settings.verbosity = logging.ERROR
    scvi.settings.dl_num_workers = 0
    scvi.settings.logging_dir = spec["tmp"]
    scvi.settings.seed = int(spec["seed"])
    torch.set_num_threads(1)
    scvi.model.SCVI.setup_anndata(adata, batch_key=BATCH_KEY)
    model = scvi.model.SCVI(adata, gene_likelihood="zinb")
    start = time.perf_counter()  # lightning's setup included: the time a user waits for train()
    model.train(max_epochs=int(spec["scvi_epochs"]), batch_size=128, accelerator="cpu", devices=1,
                enable_progress_bar=False)
    fit_s = time.perf_counter() - start
    _MODEL.append(model)
    scale = np.asarray(model.get_normalized_expression(library_size=1.0, return_numpy=True), dtype=np.float64)
    library = np.asarray(adata.X.sum(1)).ravel()
    return scale * library[:, None], fit_s, int(spec["scvi_epochs"])


def _prepare(name: str, workdir: Path, seed: int):
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    import scgen_ae as sa

    adata = ad.read_h5ad(DATA_DIR / f"{name}.h5ad")
    if adata.n_vars > 2000:
        sa.pp.highly_variable(adata, n_top_genes=2000, batch_key=BATCH_KEY)
    corrupted, rows, cols, truth = sa.tl.holdout_nonzeros(adata.X, 0.1, seed)
    keep_c = np.diff(corrupted.indptr) > 0
    keep_g = np.bincount(corrupted.indices, minlength=corrupted.shape[1]) > 0
    small = ad.AnnData(corrupted, obs=adata.obs[[BATCH_KEY]].copy(), var=adata.var[[]].copy())[keep_c, keep_g].copy()
    ok = keep_c[rows] & keep_g[cols]
    row_pos, col_pos = np.cumsum(keep_c) - 1, np.cumsum(keep_g) - 1
    clean = small.copy()  # the same cells and genes, hidden counts back in
    clean.X = sp.csr_matrix(adata.X, dtype=np.float32)[keep_c][:, keep_g]
    library_ratio = np.asarray(small.X.sum(1)).ravel() / np.asarray(clean.X.sum(1)).ravel()
    np.savez(workdir / f"{name}_heldout.npz", rows=row_pos[rows[ok]], cols=col_pos[cols[ok]],
             library_ratio=library_ratio, truth=truth[ok])
    small.write_h5ad(workdir / f"{name}.h5ad")
    clean.write_h5ad(workdir / f"{name}_clean.h5ad")
    baseline = sa.tl.gene_share_baseline(corrupted, rows, cols)
    return small, truth, ok, baseline


def _run(spec: dict, workdir: Path, tag: str) -> dict:
    spec = dict(spec, result=str(workdir / f"{tag}.json"), prediction=str(workdir / f"{tag}.npy"),
                tmp=str(workdir / f"{tag}_logs"))
    path = workdir / f"{tag}_spec.json"
    path.write_text(json.dumps(spec))
    env = dict(os.environ, **QUIET_ENV, **{k: "1" for k in THREAD_ENV})
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", str(path)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{tag} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(Path(spec["result"]).read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds per tool; best fit time is reported")
    p.add_argument("--scvi-epochs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ours-kwargs", default=None, help="JSON dict of extra sa.tl.denoise arguments")
    p.add_argument("--out", type=Path, default=Path("bench_out/denoise"))
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        _worker(args._worker)
        return 0
    import numpy as np
    import pandas as pd

    import scgen_ae as sa

    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench_denoise_") as tmp:
        work = Path(tmp)
        for name in args.datasets:
            small, truth, ok, baseline = _prepare(name, work, args.seed)
            spec = dict(data=str(work / f"{name}.h5ad"), heldout=str(work / f"{name}_heldout.npz"),
                        seed=args.seed, scvi_epochs=args.scvi_epochs, ours_kwargs=args.ours_kwargs)
            # the oracle: ours on the clean counts, with a wider bottleneck that follows what it sees
            # more closely (a lower ceiling)
            oracle = dict(spec, data=str(work / f"{name}_clean.h5ad"),
                          ours_kwargs=json.dumps({**json.loads(args.ours_kwargs or "{}"), "n_latent": 32}))
            runs = {"scgen_ae": [], "scvi": [], "oracle": []}
            for r in range(args.repeats):
                for tool in runs if r == 0 else ("scgen_ae", "scvi"):  # the oracle is a ceiling, not timed
                    tag = f"{name}_{tool}_{r}"
                    res = _run(dict(oracle if tool == "oracle" else spec, tool=tool), work, tag)
                    pred = np.zeros(truth.size)
                    pred[ok] = np.load(work / f"{tag}.npy")
                    res.update(sa.tl.heldout_errors(truth, pred))
                    runs[tool].append(res)
                    with args.out.with_suffix(".runs.jsonl").open("a") as fh:  # kept if the run is cut short
                        fh.write(json.dumps(dict(res, dataset=name, tool=tool, round=r)) + "\n")
                    print(f"[bench_denoise] {tag}: fit {res['fit_seconds']:.1f} s, median AE {res['median_ae']:.3f}",
                          flush=True)
            base = sa.tl.heldout_errors(truth, baseline)
            for tool, rs in runs.items():
                frame = pd.DataFrame(rs)
                rows.append(dict(dataset=name, cells=small.n_obs, genes=small.n_vars, tool=tool,
                                 epochs=int(frame["epochs"].iloc[0]), fit_s=frame["fit_seconds"].min(),
                                 wall_s=frame["wall_seconds"].min(),
                                 **frame[[c for c in ("median_ae", "mean_ae", "pearson", "spearman", "nll",
                                                      "mean_ae_pm") if c in frame]].mean().to_dict()))
                if tool == "oracle":
                    rows.append(dict(dataset=name, cells=small.n_obs, genes=small.n_vars, tool="Poisson floor",
                                     **{k: rs[0]["floor"][k] for k in ("median_ae", "mean_ae", "pearson", "spearman")}))
            rows.append(dict(dataset=name, cells=small.n_obs, genes=small.n_vars, tool="gene-share baseline",
                             nll=sa.tl.heldout_nll(truth[ok], baseline[ok]),
                             **{k: base[k] for k in ("median_ae", "mean_ae", "pearson", "spearman")}))
    df = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out.with_suffix(".csv"), index=False)
    lines = ["| dataset | cells × genes | median AE ours / scVI / baseline | **MAE ratio** | mean AE ours / scVI "
             "| Pearson ours / scVI / baseline | Spearman ours / scVI | epochs ours / scVI | fit s ours / scVI "
             "| **time ratio** | median AE oracle / Poisson floor / 0.9 x scVI |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, g in df.groupby("dataset", sort=False):
        o, s, b, orc, floor = (g[g["tool"] == t].iloc[0] for t in ("scgen_ae", "scvi", "gene-share baseline",
                                                                   "oracle", "Poisson floor"))
        lines.append(
            f"| {name} | {o['cells']} × {o['genes']} | {o['median_ae']:.3f} / {s['median_ae']:.3f} / "
            f"{b['median_ae']:.3f} | **{o['median_ae'] / s['median_ae']:.2f}** | {o['mean_ae']:.3f} / "
            f"{s['mean_ae']:.3f} | {o['pearson']:.3f} / {s['pearson']:.3f} / {b['pearson']:.3f} | "
            f"{o['spearman']:.3f} / {s['spearman']:.3f} | {int(o['epochs'])} / {int(s['epochs'])} | "
            f"{o['fit_s']:.1f} / {s['fit_s']:.1f} | **{o['fit_s'] / s['fit_s']:.2f}** | "
            f"{orc['median_ae']:.3f} / {floor['median_ae']:.3f} / {0.9 * s['median_ae']:.3f} |")
    lines += ["", "| dataset | **NLL** ours / scVI / baseline (nats per hidden entry) | **NLL ratio** | mean AE ours / "
              "scVI sample / scVI posterior mean | **MAE ratio** (vs the better scVI) | Pearson ours / scVI |",
              "|---|---|---|---|---|---|"]
    for name, g in df.groupby("dataset", sort=False):
        o, s, b = (g[g["tool"] == t].iloc[0] for t in ("scgen_ae", "scvi", "gene-share baseline"))
        best = min(s["mean_ae"], s["mean_ae_pm"])
        lines.append(f"| {name} | {o['nll']:.3f} / {s['nll']:.3f} / {b['nll']:.3f} | **{o['nll'] / s['nll']:.2f}** | "
                     f"{o['mean_ae']:.3f} / {s['mean_ae']:.3f} / {s['mean_ae_pm']:.3f} | "
                     f"**{o['mean_ae'] / best:.2f}** | "
                     f"{o['pearson']:.3f} / {s['pearson']:.3f} |")
    table = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
