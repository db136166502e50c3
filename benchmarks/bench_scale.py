#!/usr/bin/env python
"""By-hand benchmark: seconds per epoch and peak RSS of ``sa.tl.vae`` trained in memory vs
out of core (the ``.h5ad`` opened with ``sa.read_backed`` or with anndata's own
``read_h5ad(backed="r")``, a zarr store), and scvi-tools' SCVI on the same file, on the
resampled data of ``make_scale_data.py``.

Every fit runs in a fresh subprocess (peak RSS = its VmHWM), with one torch thread and
the OMP/MKL variables at 1; configurations are interleaved and repeated (``--reps``),
and the best epoch time of the repeats is reported next to all of them, because the
machine is shared. Same model on both tools: n_hidden 128, n_latent 10, 1 layer, ZINB,
gene dispersion, batch size 128, Adam 1e-3; tl.vae keeps its defaults otherwise (batch
in encoder and decoder, MMD on). No validation split and no early stopping, so an epoch
is one pass over all cells (``--validation-fraction 0.1``, tl.vae's default, adds the
validation pass of each epoch); "epoch s" is the training loop only (tl.vae: history
``seconds``; scvi: a Lightning callback around the epochs). "call s" adds what a
user waits for beyond the epochs: the check pass over the file and the latent.

    python benchmarks/make_scale_data.py --cells 100000 1000000 --out bench_out/scale
    python benchmarks/bench_scale.py --cells 100000 --reps 3
    python benchmarks/bench_scale.py --cells 1000000 --reps 1
    python benchmarks/bench_scale.py --reader --cells 100000      # loader alone, chunk sizes
    python benchmarks/make_scale_data.py --cells 200000 --formats h5ad --out /tmp/scale
    python benchmarks/bench_scale.py --cells 200000 --data /tmp/scale --configs ours-memory ours-backed \
        ours-h5ad --validation-fraction 0.1 --reps 2                 # however the file is opened
    python benchmarks/bench_scale.py ... --dense                     # X dense on disk (h5ad-dense)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_vae import QUIET_ENV, THREAD_ENV, _peak_rss_mb  # noqa: E402

# ours-h5ad: sa.read_backed; ours-backed: anndata.read_h5ad(path, backed="r")
CONFIGS = ["ours-memory", "ours-backed", "ours-h5ad", "ours-zarr", "scvi-memory", "scvi-backed"]


# --------------------------------------------------------------------------- worker (one fit per process)

def _open(source: str, path: str):
    import anndata as ad

    import scgen_ae as sa

    if source == "memory":
        return ad.read_h5ad(path)
    if source == "backed":
        return ad.read_h5ad(path, backed="r")
    return sa.read_backed(path)


class _FirstCells:
    """A data source that ends each pass after ``max_cells`` training cells (``--max-cells``:
    a partial epoch, to measure throughput and memory on 10^6 cells within the time at hand)."""

    def __init__(self, data, max_cells: int):
        self.data, self.max_cells = data, max_cells

    def __getattr__(self, name):
        return getattr(self.data, name)

    def iterate(self, idx, batch_size, rng=None, **kw):
        seen = 0
        for mb in self.data.iterate(idx, batch_size, rng, **kw):
            if seen >= self.max_cells:
                return
            seen += mb.x.shape[0]
            yield mb


def _fit_ours(spec: dict) -> dict:
    import scgen_ae as sa

    import scgen_ae.tl._vae as front

    sa.ondisk.PREFETCH = spec.get("prefetch", True)
    cpu = {}
    fit = front.fit

    def timed_fit(module, data, *args, **kwargs):  # process CPU time (all threads) of the training loop alone
        if spec.get("max_cells"):
            data = _FirstCells(data, spec["max_cells"])
        t0 = time.process_time()
        try:
            return fit(module, data, *args, **kwargs)
        finally:
            cpu["s"] = time.process_time() - t0

    front.fit = timed_fit
    start = time.perf_counter()
    adata = _open(spec["source"], spec["path"])
    opened = time.perf_counter()
    model = sa.tl.vae(adata, batch_key="batch", max_epochs=spec["epochs"],
                      validation_fraction=spec.get("validation_fraction", 0.0),
                      early_stopping=False, n_threads=1, progress=False)
    return {"open_s": opened - start, "call_s": time.perf_counter() - opened,
            "epoch_s": model.history["seconds"] / spec["epochs"], "epoch_cpu_s": cpu["s"] / spec["epochs"],
            "n_cells": adata.n_obs, "cells_per_epoch": min(adata.n_obs, spec.get("max_cells") or adata.n_obs)}


def _fit_scvi(spec: dict) -> dict:
    import logging

    import scvi
    import torch
    from lightning.pytorch.callbacks import Callback

    for name in ("scvi", "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    scvi.settings.dl_num_workers = 0
    torch.set_num_threads(1)

    class EpochTimer(Callback):
        total, cpu, t0, c0 = 0.0, 0.0, None, None

        def on_train_start(self, trainer, pl_module):  # whole training: also ends on max_steps mid-epoch
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_train_end(self, trainer, pl_module):
            self.total += time.perf_counter() - self.t0
            self.cpu += time.process_time() - self.c0

    start = time.perf_counter()
    adata = _open(spec["source"], spec["path"])
    opened = time.perf_counter()
    timer = EpochTimer()
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    model = scvi.model.SCVI(adata, n_hidden=128, n_latent=10, n_layers=1, gene_likelihood="zinb")
    model.train(max_epochs=spec["epochs"], train_size=1.0, batch_size=128, early_stopping=False,
                accelerator="cpu", devices=1, enable_progress_bar=False, callbacks=[timer],
                **({"max_steps": -(-spec["max_cells"] // 128)} if spec.get("max_cells") else {}))
    if not spec.get("max_cells"):  # partial-epoch runs measure training and memory only
        model.get_latent_representation()
    return {"open_s": opened - start, "call_s": time.perf_counter() - opened,
            "epoch_s": timer.total / spec["epochs"], "epoch_cpu_s": timer.cpu / spec["epochs"],
            "n_cells": adata.n_obs, "cells_per_epoch": min(adata.n_obs, spec.get("max_cells") or adata.n_obs)}


def _reader(spec: dict) -> dict:
    """The loader alone: cells per second of one shuffled pass, no model."""
    import numpy as np

    from scgen_ae.tl._common import training_data

    adata = _open(spec["source"], spec["path"])
    data, _ = training_data(adata, None, "batch", "zinb")
    if spec.get("chunk"):
        data.chunk_size, data.window_cells = spec["chunk"], spec["chunk"] * max(1, 16384 // spec["chunk"])
    data.prefetch = spec.get("prefetch", True)
    start, c0 = time.perf_counter(), time.process_time()
    n = sum(mb.x.shape[0] for mb in data.iterate(np.arange(data.n_cells), 128, np.random.default_rng(0)))
    return {"epoch_s": time.perf_counter() - start, "epoch_cpu_s": time.process_time() - c0, "n_cells": n,
            "open_s": 0.0, "call_s": 0.0}


def _worker(spec_json: str) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    spec = json.loads(spec_json)
    fn = _reader if spec.get("reader") else _fit_ours if spec["tool"] == "ours" else _fit_scvi
    try:
        result = fn(spec)
        result["status"] = "ok"
    except Exception as err:  # noqa: BLE001 - a peer that cannot run is a result, not a crash
        result = {"status": f"failed: {type(err).__name__}: {str(err)[:300]}"}
    result["peak_rss_mb"] = _peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- table

def table(paths: list[Path]) -> str:
    """Markdown table of result files: per (cells, configuration) the best epoch of the repeats.

    Throughput is cells trained per second of process CPU time (all threads of the
    process): on a machine shared with other jobs, wall time measures the others' load
    as much as ours, CPU time much less so. The ratio is against ours-memory at that size.
    """
    rows = [json.loads(ln) for path in paths for ln in path.read_text().splitlines() if ln.strip()]
    best: dict[tuple, list[dict]] = {}
    for r in rows:
        best.setdefault((r["cells"], r["label"], r.get("max_cells")), []).append(r)
    out = ["| cells in file | configuration | cells trained per epoch | epoch CPU s | epoch wall s | "
           "cells / CPU s | vs ours-memory | peak RSS MB | runs |", "|---|---|---|---|---|---|---|---|---|"]
    speed = {}
    for (n, label, cap), runs in sorted(best.items(), key=lambda kv: (kv[0][0], kv[0][2] or 0, CONFIGS.index(kv[0][1]))):
        ok = [r for r in runs if r["status"] == "ok"]
        if not ok:
            out.append(f"| {n:,} | {label} | {cap or n:,} | - | - | - | - | - | {runs[0]['status'][:90]} |")
            continue
        r = min(ok, key=lambda r: r["epoch_cpu_s"])
        cells = r.get("cells_per_epoch", n)
        rate = cells / r["epoch_cpu_s"]
        speed[(n, label, cap)] = rate
        ref = speed.get((n, "ours-memory", cap))
        out.append(f"| {n:,} | {label} | {cells:,} | {r['epoch_cpu_s']:.1f} | {r['epoch_s']:.0f} | {rate:,.0f} | "
                   f"{rate / ref:.2f} | {max(x['peak_rss_mb'] for x in ok):,.0f} | {len(ok)} of {len(runs)} |"
                   if ref else
                   f"| {n:,} | {label} | {cells:,} | {r['epoch_cpu_s']:.1f} | {r['epoch_s']:.0f} | {rate:,.0f} | - | "
                   f"{max(x['peak_rss_mb'] for x in ok):,.0f} | {len(ok)} of {len(runs)} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- driver

def _run(spec: dict, timeout: float) -> dict:
    env = dict(os.environ, **QUIET_ENV, **{k: "1" for k in THREAD_ENV})
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"status": f"crashed rc={proc.returncode}: {(proc.stdout + proc.stderr)[-300:]!r}"}
    return json.loads(lines[-1][7:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, nargs="+", default=[100_000])
    p.add_argument("--data", type=Path, default=Path("bench_out/scale"))
    p.add_argument("--configs", nargs="+", default=CONFIGS, choices=CONFIGS)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--validation-fraction", type=float, default=0.0,
                   help="tl.vae's validation split (0.1 is its default; scvi runs ignore it)")
    p.add_argument("--max-cells", type=int, default=None,
                   help="end each epoch after this many training cells (a partial epoch; throughput, memory)")
    p.add_argument("--dense", action="store_true", help="the .h5ad with a dense X (make_scale_data.py h5ad-dense)")
    p.add_argument("--reader", action="store_true", help="time the loader alone over chunk sizes")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out", type=Path, default=Path("bench_out/bench_scale.jsonl"))
    p.add_argument("--table", type=Path, nargs="+", help="print the markdown table of these result files and exit")
    args = p.parse_args(argv)
    if args.table:
        print(table(args.table))
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.cells:
        specs = []
        if args.reader:
            specs = [{"reader": True, "label": "in-memory CellData", "source": "memory", "tool": "ours"}]
            specs += [{"reader": True, "label": f"h5ad, chunk {c}", "source": "h5ad", "tool": "ours", "chunk": c}
                      for c in (64, 256, 1024)]
            specs += [{"reader": True, "label": "h5ad, chunk 256, no read-ahead", "source": "h5ad", "tool": "ours",
                       "chunk": 256, "prefetch": False},
                      {"reader": True, "label": "zarr, chunk 256", "source": "zarr", "tool": "ours", "chunk": 256},
                      {"reader": True, "label": "zarr, whole storage chunks", "source": "zarr", "tool": "ours"}]
        else:
            for cfg in args.configs:
                tool, source = cfg.split("-")
                specs.append({"label": cfg, "tool": tool, "source": source, "epochs": args.epochs,
                              "max_cells": args.max_cells, "validation_fraction": args.validation_fraction})
        for spec in specs:
            suffix = ".zarr" if spec["source"] == "zarr" else "_dense.h5ad" if args.dense else ".h5ad"
            spec["path"] = str(args.data / f"pbmc_{n}{suffix}")
        for rep in range(args.reps):  # interleaved: every configuration once per round
            for spec in specs:
                res = {**spec, **_run(spec, args.timeout), "rep": rep, "cells": n}
                rows.append(res)
                with args.out.open("a") as fh:
                    fh.write(json.dumps(res) + "\n")
                print(f"{n:>8} {res['label']:<32} rep {rep}: " + (
                    f"epoch {res['epoch_s']:.1f} s (CPU {res['epoch_cpu_s']:.1f} s), call {res['call_s']:.1f} s, open {res['open_s']:.1f} s, "
                    f"peak RSS {res['peak_rss_mb']:.0f} MB" if res["status"] == "ok" else res["status"]), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--_worker":
        _worker(sys.argv[2])
    else:
        raise SystemExit(main())
