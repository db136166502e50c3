#!/usr/bin/env python
"""By-hand benchmark: ``sa.tl.vae`` against scvi-tools' ``SCVI`` on the shared real data sets.

Not a test: run it on an otherwise idle machine (the CPU timings are meaningless under load).

For every data set (2,000 seurat_v3 HVGs with ``batch_key="batch"``; a data set with
at most 2,000 genes keeps all of them), every tool and every thread count, one fit
runs in a fresh Python subprocess, so that its peak RSS (``ru_maxrss``) belongs to that
fit alone and thread settings (``torch.set_num_threads`` plus OMP/MKL/OpenBLAS env
vars) are set before anything is imported. Both tools get the same architecture
(n_hidden 128, n_latent 10, n_layers 1, ZINB, gene dispersion, batch size 128, Adam
lr 1e-3) and, by default, the same number of epochs without early stopping, and they
validate on *the same* 10 % of cells (scvi gets our split via ``external_indexing``;
``--scvi-split own`` uses its own ``train_size=0.9`` split instead).

Recorded per fit: seconds per epoch (training-loop time / epochs run; the loop
includes the per-epoch validation pass for both tools), cells per second
(n_train * epochs / loop time), peak RSS, the validation loss each tool reports, a
common validation loss computed the same way for both (see below), and the scIB
scores (``sa.tl.score_integration``) of the latent space; the uncorrected PCA is
scored once per data set.

Validation losses -- read this before comparing them:

- ``val_loss_reported`` is each tool's own number at the last epoch. scvi: the last
  ``history["elbo_validation"]``, the per-cell mean of reconstruction loss + KL (KL
  unweighted, z sampled once). scgen_ae: the last ``history["validation_loss"]``,
  per-cell mean of reconstruction + kl_weight * KL evaluated at the posterior *mean*
  z (no sampling), which is lower (better) than a sampled ELBO.
- ``val_elbo`` is the same estimator for both, on the same validation cells and on
  the weights each tool ends with: the per-cell mean negative ELBO with one sampled
  z per cell and KL weight 1, averaged over ``--elbo-repeats`` draws (scvi:
  minus ``model.get_elbo(indices=val_idx)``: get_elbo returns the ELBO itself, a negative
  number, while ``elbo_validation`` in its history is reconstruction + KL, a positive
  one). Both include the lgamma(x + 1) constant of the count likelihood.
- scgen_ae ends on the weights of its best validation epoch (even with early stopping
  off), scvi on the last epoch.

Usage (timings: idle machine only)::

    python benchmarks/bench_vae.py                       # all data sets, 100 epochs, 1 and 2 threads
    python benchmarks/bench_vae.py --datasets cellbench_3cl --epochs 2 --threads 1   # smoke test
    python benchmarks/bench_vae.py --default --threads 2  # both tools with default settings (quality)

Writes ``<out>.csv`` and ``<out>.md`` (``--out``, default ``bench_out/bench_vae_<mode>``)
and prints the markdown tables.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASETS = ["cellbench_3cl", "cellbench_3cl_3protocols_800genes", "kang_ifnb_pbmc_subset", "pbmc_10x_chemistries"]
TOOLS = ["scgen_ae", "scvi", "harmony", "pca"]
DATA_DIR = Path(os.environ.get("SCGEN_AE_DATA", "/work/shared/data"))
LABEL_KEY = "cell_type"
# files without labels get coarse marker-derived ones (sa.pp.annotate_markers), so that every data set
# gets Bio, Batch and Total; the value is its groupby (Kang's batches are ctrl / stim: annotate per condition)
# issue 2's quality target: the best Total of established methods on each data set
TARGET_TOTAL = {"cellbench_3cl": 0.859, "cellbench_3cl_3protocols_800genes": 0.823,
                "kang_ifnb_pbmc_subset": 0.675, "pbmc_10x_chemistries": 0.704}
MARKER_LABELS = {"kang_ifnb_pbmc_subset": "batch", "pbmc_10x_chemistries": None}
BATCH_KEY = "batch"
ARCH = {"n_hidden": 128, "n_latent": 10, "n_layers": 1}
BATCH_SIZE = 128
VALIDATION_FRACTION = 0.1
PATIENCE = 30  # ours; scvi is given the same when --early-stopping is on
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS")
QUIET_ENV = {
    "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1",
}


# --------------------------------------------------------------------------- worker (one fit per process)

def _block_network() -> list:
    """Refuse (and count) every outgoing connection: nothing in a fit should need the network."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network access is disabled in bench_vae workers")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.getaddrinfo = refuse
    socket.create_connection = refuse
    return attempts


def _peak_rss_mb() -> float:
    """Peak RSS of this process. On Linux VmHWM, because ru_maxrss survives execve and so
    reports the parent's size when the parent (which holds jax after scoring) is larger."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20  # KiB on Linux, bytes on macOS


def _worker_start(threads: int) -> list:
    """What every benchmark worker does first: no network, quiet warnings, ``threads`` torch
    threads, torch's lazy imports done. Returns the list of refused connection attempts."""
    attempts = _block_network()
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set
        pass
    import torch._dynamo  # noqa: F401  torch imports it lazily on the first optimizer (~2-3 s, once per
    # process); scvi pays that when lightning is imported, so import it here, outside the timings, for all
    return attempts


def _worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    attempts = _worker_start(int(spec["threads"]))
    import numpy as np
    import torch

    import anndata as ad

    adata = ad.read_h5ad(spec["data"])
    split = np.load(spec["split"])
    train_idx, val_idx = split["train"], split["validation"]
    fit = {"scgen_ae": _fit_ours, "scvi": _fit_scvi, "harmony": _fit_harmony, "pca": _fit_pca}[spec["tool"]]
    result = fit(adata, spec, train_idx, val_idx)
    result.update(peak_rss_mb=_peak_rss_mb(), network_attempts=len(attempts), torch_threads=torch.get_num_threads())
    np.save(spec["embedding"], result.pop("latent"))
    Path(spec["result"]).write_text(json.dumps(result))


def _fit_ours(adata, spec, train_idx, val_idx) -> dict:
    import numpy as np
    import torch

    import scgen_ae as sa
    from scgen_ae.tl._common import training_data

    kwargs = dict(batch_key=BATCH_KEY, n_threads=int(spec["threads"]), progress=False, seed=int(spec["seed"]))
    if spec.get("ours_like_scvi"):
        kwargs.update(encode_batch=False, batch_gene_offsets=False, mmd_weight=0.0)
    kwargs.update(json.loads(spec.get("ours_kwargs") or "{}"))
    if not spec["default"]:
        kwargs.update(likelihood="zinb", **ARCH, max_epochs=int(spec["epochs"]), batch_size=BATCH_SIZE,
                      validation_fraction=VALIDATION_FRACTION, early_stopping=bool(spec["early_stopping"]),
                      patience=PATIENCE)
    rss_before = _peak_rss_mb()
    start = time.perf_counter()
    model = sa.tl.vae(adata, **kwargs)
    wall = time.perf_counter() - start
    h = adata.uns["vae"]["history"]
    epochs = len(h["train_loss"])
    vl = np.asarray(h["validation_loss"], dtype=float)
    best = int(h["best_epoch"])

    # common estimator: one sampled z per cell, KL weight 1; norm/dropout layers in eval mode; no MMD
    # penalty (train mode adds it to the loss: it shapes training and is no part of the ELBO)
    import dataclasses

    module = model.module
    module.cfg = dataclasses.replace(module.cfg, mmd_weight=0.0)
    module.train()
    for m in module.modules():
        if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.Dropout, torch.nn.LayerNorm)):
            m.eval()
    data, _ = training_data(adata, None, BATCH_KEY, "zinb")
    torch.manual_seed(int(spec["seed"]))
    draws = []
    with torch.no_grad():
        for _ in range(int(spec["elbo_repeats"])):
            total = 0.0
            for mb in data.iterate(val_idx, 1024, drop_last_if_tiny=False):
                total += float(module.loss(mb.to(model.device), 1.0)) * mb.x.shape[0]
            draws.append(total / len(val_idx))
    module.eval()
    return {
        "epochs_run": epochs, "fit_seconds": float(h["seconds"]), "wall_seconds": wall,
        "rss_before_fit_mb": rss_before, "n_train": len(train_idx), "n_validation": len(val_idx),
        "val_loss_reported": float(vl[-1]) if len(vl) else math.nan,
        "val_loss_reported_best": float(vl[best]) if len(vl) and 0 <= best < len(vl) else math.nan,
        "best_epoch": best, "val_elbo": float(np.mean(draws)), "validates_each_epoch": True,
        "latent": np.asarray(adata.obsm["X_vae"], dtype=np.float32),
    }


def _log_pca(adata, seed: int):
    """scanpy's usual path to the uncorrected embedding: normalise, log1p, 50-component PCA."""
    import scanpy as sc

    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=min(50, min(adata.shape) - 1), random_state=seed)
    return adata.obsm["X_pca"]


def _fit_pca(adata, spec, train_idx, val_idx) -> dict:
    """The uncorrected baseline, timed like the other tools (and the PCR-comparison reference)."""
    return _fit_harmony(adata, spec, train_idx, val_idx, correct=False)


def _fit_harmony(adata, spec, train_idx, val_idx, correct: bool = True) -> dict:
    """scanpy's usual Harmony path: harmonypy on the 50 PCs of :func:`_log_pca`."""
    import numpy as np

    rss_before = _peak_rss_mb()
    start = time.perf_counter()
    pcs = _log_pca(adata, int(spec["seed"]))
    if correct:
        import harmonypy

        ho = harmonypy.run_harmony(pcs, adata.obs, [BATCH_KEY], random_state=int(spec["seed"]), verbose=False)
        z = np.asarray(ho.Z_corr)
        pcs = z.T if z.shape[0] != adata.n_obs else z
    latent = np.ascontiguousarray(pcs, dtype=np.float32)
    wall = time.perf_counter() - start
    return {"epochs_run": math.nan, "fit_seconds": wall, "wall_seconds": wall, "rss_before_fit_mb": rss_before,
            "n_train": adata.n_obs, "n_validation": 0, "val_loss_reported": math.nan,
            "val_loss_reported_best": math.nan, "best_epoch": -1, "validates_each_epoch": False,
            "val_elbo": math.nan, "latent": latent}


def _fit_scvi(adata, spec, train_idx, val_idx) -> dict:
    import logging

    import numpy as np

    import scvi
    from lightning.pytorch.callbacks import Callback

    # after the imports: lightning sets its own logger levels when it is imported
    for name in ("scvi", "lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                 "lightning_utilities", "jax", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    scvi.settings.verbosity = logging.ERROR
    scvi.settings.dl_num_workers = 0
    scvi.settings.logging_dir = spec["tmp"]
    scvi.settings.seed = int(spec["seed"])
    import torch

    torch.set_num_threads(int(spec["threads"]))  # again: imports above must not have changed it

    class LoopTimer(Callback):
        start = end = None

        def on_train_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            self.end = time.perf_counter()

    timer = LoopTimer()
    rss_before = _peak_rss_mb()
    start = time.perf_counter()  # wall: setup_anndata .. get_latent_representation, like one sa.tl.vae call
    scvi.model.SCVI.setup_anndata(adata, batch_key=BATCH_KEY)
    if spec["default"]:
        model = scvi.model.SCVI(adata)  # its defaults: 128 hidden, 10 latent, 1 layer, zinb, gene dispersion
        train = {}
    else:
        model = scvi.model.SCVI(adata, **ARCH, gene_likelihood="zinb", dispersion="gene")
        warmup = spec["kl_warmup"]
        train = dict(max_epochs=int(spec["epochs"]), batch_size=BATCH_SIZE, check_val_every_n_epoch=1,
                     early_stopping=bool(spec["early_stopping"]), plan_kwargs={"lr": 1e-3})
        if warmup is not None:
            train["plan_kwargs"]["n_epochs_kl_warmup"] = int(warmup)
        train["plan_kwargs"].update(json.loads(spec.get("scvi_plan_kwargs") or "{}"))  # e.g. another lr
        if spec["early_stopping"]:
            train.update(early_stopping_patience=PATIENCE, early_stopping_warmup_epochs=int(warmup or 0))
    if spec["scvi_split"] == "same":
        train["datasplitter_kwargs"] = {"external_indexing": [np.asarray(train_idx), np.asarray(val_idx),
                                                              np.array([], dtype=int)]}
    else:
        train["train_size"] = 1 - VALIDATION_FRACTION
    model.train(accelerator="cpu", devices=1, enable_progress_bar=False, callbacks=[timer], **train)
    latent = np.asarray(model.get_latent_representation(), dtype=np.float32)
    wall = time.perf_counter() - start
    hist = model.history
    epochs = len(hist["elbo_train"]) if "elbo_train" in hist else int(model.trainer.current_epoch) if hasattr(
        model, "trainer") else math.nan
    reported = float(hist["elbo_validation"].iloc[-1, 0]) if "elbo_validation" in hist else math.nan
    used_val = np.asarray(model.validation_indices)
    if spec["scvi_split"] == "same" and not np.array_equal(np.sort(used_val), np.sort(val_idx)):
        raise RuntimeError("scvi did not use the validation cells it was given")
    torch.manual_seed(int(spec["seed"]))
    # get_elbo returns the ELBO (-(reconstruction + KL)); negate to the loss scale of everything else
    draws = [-float(model.get_elbo(indices=used_val, batch_size=1024)) for _ in range(int(spec["elbo_repeats"]))]
    loop = (timer.end - timer.start) if timer.start is not None and timer.end is not None else wall
    return {
        "epochs_run": epochs, "fit_seconds": loop, "wall_seconds": wall, "rss_before_fit_mb": rss_before,
        "n_train": len(model.train_indices), "n_validation": len(used_val),
        "val_loss_reported": reported, "val_loss_reported_best": math.nan, "best_epoch": -1,
        "validates_each_epoch": "elbo_validation" in hist,
        "val_elbo": float(np.mean(draws)),
        "latent": latent,
    }


# --------------------------------------------------------------------------- driver

def _prepare(name: str, workdir: Path, seed: int):
    """HVG subset written to disk (both tools read the same file) and the shared split."""
    import anndata as ad
    import numpy as np

    import scgen_ae as sa
    from scgen_ae.data import train_validation_split

    adata = ad.read_h5ad(DATA_DIR / f"{name}.h5ad")
    n_genes_raw = adata.n_vars
    labels = "ground truth"
    if LABEL_KEY not in adata.obs and name in MARKER_LABELS:
        # on all genes, before the HVG subset: some markers are not highly variable
        sa.pp.annotate_markers(adata, groupby=MARKER_LABELS[name], key_added=LABEL_KEY)
        labels = "markers" + (f" (per {MARKER_LABELS[name]})" if MARKER_LABELS[name] else "")
    elif LABEL_KEY not in adata.obs:
        labels = "none"
    if adata.n_vars > 2000:
        sa.pp.highly_variable(adata, n_top_genes=2000, batch_key=BATCH_KEY)
    keep = [c for c in (BATCH_KEY, LABEL_KEY) if c in adata.obs]
    small = ad.AnnData(adata.X.copy(), obs=adata.obs[keep].copy(), var=adata.var[[]].copy())
    path = workdir / f"{name}.h5ad"
    small.write_h5ad(path)
    # the split sa.tl.vae draws (train.fit: first use of default_rng(seed)); scvi gets the same cells
    train_idx, val_idx = train_validation_split(small.n_obs, VALIDATION_FRACTION, np.random.default_rng(seed))
    split = workdir / f"{name}_split.npz"
    np.savez(split, train=train_idx, validation=val_idx)
    return small, path, split, n_genes_raw, labels


def _run_fit(spec: dict, workdir: Path, timeout: float) -> dict:
    tag = f"{spec['dataset']}_{spec['tool']}_t{spec['threads']}{spec.get('tag', '')}"
    spec = dict(spec, result=str(workdir / f"{tag}.json"), embedding=str(workdir / f"{tag}.npy"),
                tmp=str(workdir / f"{tag}_scvi_logs"))
    if Path(spec["result"]).exists() and Path(spec["embedding"]).exists():  # --workdir: a fit that finished
        res = json.loads(Path(spec["result"]).read_text())
        print(f"[bench_vae] {tag}: reusing the finished fit in {workdir}", flush=True)
        return dict(res, status="ok", process_seconds=math.nan, embedding=spec["embedding"], reused=True)
    spec_path = workdir / f"{tag}_spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, **QUIET_ENV, **{k: str(spec["threads"]) for k in THREAD_ENV})
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", str(spec_path)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        print(f"[bench_vae] {tag} FAILED (rc {proc.returncode}):\n{tail}", file=sys.stderr, flush=True)
        return {"status": f"failed rc={proc.returncode}", "process_seconds": elapsed}
    res = json.loads(Path(spec["result"]).read_text())
    res.update(status="ok", process_seconds=elapsed, embedding=spec["embedding"])
    return res


def _fmt(x, nd=2):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def _markdown(df, mode: str) -> str:
    import pandas as pd

    lines = [f"## bench_vae ({mode})", ""]
    fits = df[df["tool"] != "uncorrected"]
    # speed table: ours vs scvi side by side
    lines += ["### Speed and memory (ratios are scgen_ae / scvi)", "",
              "| dataset | cells × genes | threads | epochs (ours/scvi) | s/epoch ours | s/epoch scvi | cells/s ours "
              "| cells/s scvi | throughput ratio | peak RSS MB ours | peak RSS MB scvi | RSS ratio |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (ds, thr), g in fits.groupby(["dataset", "threads"], sort=False):
        o = g[g["tool"] == "scgen_ae"]
        s = g[g["tool"] == "scvi"]
        get = lambda frame, col: float(frame[col].iloc[0]) if len(frame) and col in frame else math.nan  # noqa: E731
        tp = get(o, "cells_per_s") / get(s, "cells_per_s") if len(o) and len(s) else math.nan
        rss = get(o, "peak_rss_mb") / get(s, "peak_rss_mb") if len(o) and len(s) else math.nan
        shape = f"{int(g['n_cells'].iloc[0])} × {int(g['n_genes'].iloc[0])}"
        ep = f"{_fmt(get(o, 'epochs_run'), 0)}/{_fmt(get(s, 'epochs_run'), 0)}"
        lines.append(f"| {ds} | {shape} | {int(thr)} | {ep} | {_fmt(get(o, 'sec_per_epoch'), 3)} | "
                     f"{_fmt(get(s, 'sec_per_epoch'), 3)} | {_fmt(get(o, 'cells_per_s'), 0)} | "
                     f"{_fmt(get(s, 'cells_per_s'), 0)} | {_fmt(tp)} | {_fmt(get(o, 'peak_rss_mb'), 0)} | "
                     f"{_fmt(get(s, 'peak_rss_mb'), 0)} | {_fmt(rss)} |")
    lines += ["", "### Quality (val −ELBO: per-cell mean on the same validation cells, lower is better; "
              "scIB: unscaled, Total = 0.6 Bio + 0.4 Batch; no labels → batch metrics only, Total = Batch)", "",
              "| dataset | method | threads | epochs | fit s | peak RSS MB | val −ELBO (common) | val loss (own) "
              "| scIB Total | Bio | Batch |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        thr = "–" if r["tool"] == "uncorrected" else str(int(r["threads"]))
        lines.append(f"| {r['dataset']} | {r['tool']} | {thr}"
                     f" | {_fmt(r.get('epochs_run'), 0)} | {_fmt(r.get('fit_seconds'), 1)} | "
                     f"{_fmt(r.get('peak_rss_mb'), 0)} | {_fmt(r.get('val_elbo'), 1)} | "
                     f"{_fmt(r.get('val_loss_reported'), 1)} | {_fmt(r.get('scib_total'), 3)} | "
                     f"{_fmt(r.get('scib_bio'), 3)} | {_fmt(r.get('scib_batch'), 3)} |")
    notes = sorted({str(n) for n in df.get("scib_note", pd.Series(dtype=str)).dropna() if str(n)})
    if notes:
        lines += ["", *[f"Note: {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def _quality_markdown(df) -> str:
    """Compact scIB table (one row per dataset and method) and the issue-2 target check."""
    lines = ["### scIB quality, fit time and memory (unscaled; Total = 0.6 Bio + 0.4 Batch)", "",
             "| dataset | cells × genes | labels | method | epochs | fit s | peak RSS MB | Bio | Batch | **Total** |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    names = {"scgen_ae": "tl.vae (default)", "scvi": "scVI (default, 400 ep)", "harmony": "Harmony (50 PCs)",
             "pca": "uncorrected PCA", "uncorrected": "uncorrected PCA"}
    for _, r in df.iterrows():
        lines.append(f"| {r['dataset']} | {int(r['n_cells'])} × {int(r['n_genes'])} | {r.get('labels', '–')} | "
                     f"{names.get(r['tool'], r['tool'])} | {_fmt(r.get('epochs_run'), 0)} | "
                     f"{_fmt(r.get('fit_seconds'), 1)} | {_fmt(r.get('peak_rss_mb'), 0)} | "
                     f"{_fmt(r.get('scib_bio'), 3)} | {_fmt(r.get('scib_batch'), 3)} | **{_fmt(r.get('scib_total'), 3)}** |")
    lines += ["", "### Issue-2 target: tl.vae default Total >= best established Total, in less time than scVI", "",
              "| dataset | target Total | tl.vae Total | Δ Total | Δ Bio vs best other | Δ Batch vs best other "
              "| fit s tl.vae / scVI | met |", "|---|---|---|---|---|---|---|---|"]
    for ds, g in df.groupby("dataset", sort=False):
        ours, scvi = g[g["tool"] == "scgen_ae"], g[g["tool"] == "scvi"]
        if ds not in TARGET_TOTAL or ours.empty or "scib_total" not in g:
            continue
        o = ours.iloc[0]
        others = g[g["tool"] != "scgen_ae"].dropna(subset=["scib_total"])
        best = others.loc[others["scib_total"].idxmax()] if len(others) else None
        d_bio = o["scib_bio"] - best["scib_bio"] if best is not None else math.nan
        d_batch = o["scib_batch"] - best["scib_batch"] if best is not None else math.nan
        t_ratio = o["fit_seconds"] / scvi.iloc[0]["fit_seconds"] if len(scvi) else math.nan
        met = o["scib_total"] >= TARGET_TOTAL[ds] and t_ratio < 1
        lines.append(f"| {ds} | {TARGET_TOTAL[ds]:.3f} | {_fmt(o['scib_total'], 3)} | "
                     f"{o['scib_total'] - TARGET_TOTAL[ds]:+.3f} | {d_bio:+.3f} | {d_batch:+.3f} | "
                     f"{_fmt(t_ratio)} | {'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def _merge(csvs: list, out: Path) -> int:
    """One table from several runs; score_integration's untimed PCA row only where no timed one exists."""
    import pandas as pd

    df = pd.concat([pd.read_csv(c) for c in csvs], ignore_index=True)
    timed = set(df.loc[df["tool"] == "pca", "dataset"])
    df = df[~((df["tool"] == "uncorrected") & df["dataset"].isin(timed))]
    df = df.drop_duplicates(subset=["dataset", "tool", "threads"], keep="first")
    order = {t: i for i, t in enumerate(TOOLS + ["uncorrected"])}
    df = df.sort_values(["dataset", "tool"], key=lambda c: c.map(order) if c.name == "tool" else c.map(
        {d: i for i, d in enumerate(DATASETS)}))
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    md = _markdown(df, str(df["mode"].iloc[0])) + ("\n" + _quality_markdown(df) if "scib_total" in df else "")
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS, metavar="NAME",
                   help=f"data sets in {DATA_DIR} (default: all): {', '.join(DATASETS)}")
    p.add_argument("--epochs", type=int, default=100, help="epochs for both tools (default 100)")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="torch thread counts (default: 1 2)")
    p.add_argument("--tools", nargs="+", default=["scgen_ae", "scvi"], choices=TOOLS,
                   help="tools to fit; 'pca' times the uncorrected PCA baseline (otherwise score_integration computes it)")
    p.add_argument("--default", action="store_true",
                   help="both tools with their default training settings instead: sa.tl.vae(max_epochs=None, "
                        "early stopping on) vs SCVI().train() (400 epochs here, no early stopping, 400-epoch KL "
                        "warm-up); same validation cells unless --scvi-split own")
    p.add_argument("--early-stopping", action="store_true",
                   help="fixed-epoch mode: turn early stopping on for both (patience 30 after KL warm-up); "
                        "default off, so both run exactly --epochs")
    p.add_argument("--scvi-kl-warmup", choices=["match", "scvi"], default="match",
                   help="fixed-epoch mode: 'match' gives scvi our KL warm-up (epochs // 3, the default of "
                        "sa.tl.vae); 'scvi' keeps its 400-epoch warm-up (KL weight < 1 at the end if epochs < 400)")
    p.add_argument("--scvi-split", choices=["same", "own"], default="same",
                   help="'same': scvi validates on our validation cells (external_indexing); 'own': train_size=0.9")
    p.add_argument("--ours-like-scvi", action="store_true",
                   help="train sa.tl.vae with encode_batch=False, batch_gene_offsets=False, mmd_weight=0 (scvi's layout: batch "
                        "only in the decoder) instead of its defaults")
    p.add_argument("--ours-kwargs", default=None,
                   help='JSON of extra sa.tl.vae arguments, e.g. \'{"precision": "bf16"}\'')
    p.add_argument("--elbo-repeats", type=int, default=5, help="sampled-ELBO draws averaged for val_elbo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-score", action="store_true", help="skip the scIB scoring")
    p.add_argument("--score-jobs", type=int, default=1, help="n_jobs for the scIB neighbour search")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="seconds allowed per fit")
    p.add_argument("--out", default=None, help="output prefix (default bench_out/bench_vae_<mode>)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (subsets, embeddings, logs)")
    p.add_argument("--workdir", default=None,
                   help="work directory to use (and keep) instead of a fresh one; fits that finished there "
                        "(result .json + embedding .npy) are reused, so an interrupted run can be resumed")
    p.add_argument("--merge", nargs="+", default=None, metavar="CSV",
                   help="only combine the CSVs of earlier runs (e.g. data sets or tools run in parallel) into one "
                        "<out>.md / <out>.csv")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker:
        _worker(args._worker)
        return 0
    if args.merge:
        return _merge(args.merge, Path(args.out or "bench_out/bench_vae_merged"))

    import warnings

    import numpy as np
    import pandas as pd

    warnings.filterwarnings("ignore", message="PCR comparison score is negative")
    mode = "default" if args.default else f"{args.epochs}ep" + ("_es" if args.early_stopping else "")
    if args.ours_like_scvi:
        mode += "_scvi-layout"
    if args.ours_kwargs:
        mode += "_" + "".join(c for c in args.ours_kwargs if c.isalnum() or c in "._-")
    out = Path(args.out or f"bench_out/bench_vae_{mode}")
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_vae_"))
    workdir.mkdir(parents=True, exist_ok=True)
    kl_warmup = None if args.scvi_kl_warmup == "scvi" else min(400, max(1, args.epochs // 3))
    print(f"[bench_vae] mode={mode} datasets={args.datasets} threads={args.threads} tools={args.tools} "
          f"workdir={workdir}", flush=True)
    t_all = time.perf_counter()
    rows = []
    for name in args.datasets:
        small, path, split, n_genes_raw, labels = _prepare(name, workdir, args.seed)
        has_labels = LABEL_KEY in small.obs
        ds_rows = []
        for threads in args.threads:
            for tool in args.tools:
                spec = {"dataset": name, "tool": tool, "threads": threads, "data": str(path), "split": str(split),
                        "epochs": args.epochs, "default": args.default, "early_stopping": args.early_stopping,
                        "kl_warmup": kl_warmup, "scvi_split": args.scvi_split, "seed": args.seed,
                        "elbo_repeats": args.elbo_repeats, "ours_like_scvi": args.ours_like_scvi,
                        "ours_kwargs": args.ours_kwargs}
                res = _run_fit(spec, workdir, args.timeout)
                row = {"dataset": name, "n_cells": small.n_obs, "n_genes": small.n_vars, "n_genes_raw": n_genes_raw,
                       "tool": tool, "mode": mode, "threads": threads, "labels": labels,
                       "epochs_requested": "default" if args.default else args.epochs, **res}
                if res.get("status") == "ok":
                    row["sec_per_epoch"] = row["fit_seconds"] / max(row["epochs_run"], 1)
                    row["cells_per_s"] = row["n_train"] * row["epochs_run"] / row["fit_seconds"]
                ds_rows.append(row)
                print(f"[bench_vae] {name} {tool} threads={threads}: {res.get('status')} "
                      f"epochs={row.get('epochs_run')} s/epoch={_fmt(row.get('sec_per_epoch'), 3)} "
                      f"peakRSS={_fmt(row.get('peak_rss_mb'), 0)}MB val_elbo={_fmt(row.get('val_elbo'), 1)} "
                      f"({_fmt(res.get('process_seconds'), 1)} s)", flush=True)
        if "pca" not in args.tools:  # score_integration's own PCA, untimed
            ds_rows.append({"dataset": name, "n_cells": small.n_obs, "n_genes": small.n_vars,
                            "n_genes_raw": n_genes_raw, "tool": "uncorrected", "mode": mode, "labels": labels,
                            "status": "ok", "basis": "X_pca"})
        if not args.no_score:
            import scgen_ae as sa

            bases = []
            for r in ds_rows:
                if r["tool"] == "uncorrected":
                    continue
                if r.get("status") == "ok":
                    # the timed PCA is both a basis and the PCR-comparison reference (obsm["X_pca"])
                    key = "X_pca" if r["tool"] == "pca" and "X_pca" not in small.obsm else f"{r['tool']}_t{r['threads']}"
                    small.obsm[key] = np.load(r["embedding"])
                    r["basis"] = key
                    bases.append(key)
            start = time.perf_counter()
            bases += [] if "X_pca" in bases else ["X_pca"]
            scores = sa.tl.score_integration(small, bases=bases, batch_key=BATCH_KEY,
                                             label_key=LABEL_KEY if has_labels else None, n_jobs=args.score_jobs)
            score_s = time.perf_counter() - start
            print(f"[bench_vae] {name}: scIB scoring of {len(bases)} embeddings took {score_s:.1f} s", flush=True)
            for r in ds_rows:
                if r.get("basis") in scores.index:
                    s = scores.loc[r["basis"]]
                    r.update(scib_total=s["Total"], scib_bio=s["Bio conservation"], scib_batch=s["Batch correction"],
                             scib_note=scores.attrs.get("note", ""), scib_seconds=score_s,
                             **{f"scib_{c}": s[c] for c in scores.columns
                                if c not in ("Total", "Bio conservation", "Batch correction")})
        rows += ds_rows
        pd.DataFrame(rows).drop(columns=["embedding"], errors="ignore").to_csv(out.with_suffix(".csv"), index=False)

    df = pd.DataFrame(rows).drop(columns=["embedding"], errors="ignore")
    df.to_csv(out.with_suffix(".csv"), index=False)
    md = _markdown(df, mode) + ("\n" + _quality_markdown(df) if "scib_total" in df else "")
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"[bench_vae] wrote {out.with_suffix('.csv')} and {out.with_suffix('.md')} "
          f"in {time.perf_counter() - t_all:.0f} s", flush=True)
    if args.keep or args.workdir:
        print(f"[bench_vae] work directory kept: {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
