#!/usr/bin/env python
"""The Python half of ``benchmarks/gpu_check.sh``: every CUDA path once, and a speed comparison.

Steps, each timed and recorded in ``OUT/results.json`` as soon as it ends (a run cut
short still leaves the finished steps), each failing on its own without stopping the
others:

1. ``data``: a resampled data set built from the real cells of the built-in dataset
   (``sa.datasets.cellbench_3protocols``): cells drawn with replacement, each count
   thinned binomially (p = 0.8) so the copies of one cell differ; labels kept.
2. ``vae_fp32`` / ``vae_bf16``: ``tl.vae`` on ``--device`` with ``precision="fp32"`` and
   ``"bf16"``; ``cells_per_s`` = training cells x epochs / seconds of the training loop
   (``history["seconds"]``), ``wall_cells_per_s`` the same over the whole call (setup,
   latent, composition check).
3. ``scvi``: scvi-tools' ``SCVI`` on the same data, device, architecture (128 hidden,
   10 latent, 1 layer, ZINB), batch size (128), epochs and 90 % training split, without
   early stopping; measured the same way (its loop timed by a Lightning callback).
4. ``denoise`` (DAE), ``lda`` (ProdLDA with a batch background), ``nmf`` (integrative):
   a few epochs / passes each, on a subset.

DDP is checked by the same file started under ``torchrun`` (``--ddp-worker``; see
``gpu_check.sh``). Usage::

    python benchmarks/gpu_check.py --device cuda --out gpu_check_out      # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/check   # a quick CPU rehearsal
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

# resampled cells mix the batches' compositions differently by chance; the check is not about that
warnings.filterwarnings("ignore", message=".*batches' compositions differ.*")

SIZES = {  # cells for the speed comparison, epochs for it, cells and epochs for the other models
    "full": dict(n_cells=50_000, epochs=10, n_small=10_000, small_epochs=5, ddp_cells=5_000),
    "tiny": dict(n_cells=300, epochs=2, n_small=300, small_epochs=2, ddp_cells=300),
}
ARCH = dict(n_hidden=128, n_latent=10, n_layers=1)  # the same for tl.vae and SCVI
BATCH_SIZE = 128


def resampled(n_cells: int, seed: int = 0):
    """``n_cells`` cells resampled from the real built-in cells (see the module docstring)."""
    import scipy.sparse as sp

    import scgen_ae as sa

    real = sa.datasets.cellbench_3protocols()
    rng = np.random.default_rng(seed)
    adata = real[np.sort(rng.integers(0, real.n_obs, n_cells))].copy()
    X = sp.csr_matrix(adata.X)
    X.data = rng.binomial(X.data.astype(np.int64), 0.8).astype(np.float32)
    X.eliminate_zeros()
    adata.X = X
    adata.layers["counts"] = X.copy()
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    keep = np.asarray(X.sum(1)).ravel() > 0  # a thinned cell may be left without counts
    return adata[keep].copy()


class Recorder:
    """Runs the steps, prints one line each and rewrites ``results.json`` after every step."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.results = out, {"meta": meta, "steps": {}}
        out.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, fn):
        print(f"[gpu_check] {name} ...", flush=True)
        start = time.perf_counter()
        try:
            info = fn() or {}
            status = "ok"
        except Exception as err:  # one broken path must not hide the others
            traceback.print_exc()
            info, status = {"error": f"{type(err).__name__}: {err}"}, "FAILED"
        info = {"status": status, "seconds": round(time.perf_counter() - start, 2), **info}
        self.results["steps"][name] = info
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2, default=str))
        print(f"[gpu_check] {name}: {status} in {info['seconds']} s "
              + " ".join(f"{k}={v}" for k, v in info.items() if k not in ("status", "seconds")), flush=True)
        return status == "ok"

    def failed(self) -> list[str]:
        return [k for k, v in self.results["steps"].items() if v["status"] != "ok"]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _vae(adata, device: str, epochs: int, precision: str) -> dict:
    import scgen_ae as sa

    a = adata.copy()
    _sync(device)
    start = time.perf_counter()
    model = sa.tl.vae(a, batch_key="batch", **ARCH, max_epochs=epochs, early_stopping=False, batch_size=BATCH_SIZE,
                      device=device, precision=precision, progress=False)
    _sync(device)
    wall = time.perf_counter() - start
    from scgen_ae._validate import check_split

    hist = model.history
    n_train, epochs_run = a.n_obs - check_split(a.n_obs, 0.1), len(hist["train_loss"])  # tl.vae's 10 % validation
    assert np.isfinite(a.obsm["X_vae"]).all(), "non-finite latent"
    return {"epochs": epochs_run, "n_train": n_train, "wall_s": round(wall, 2), "loop_s": round(hist["seconds"], 2),
            "cells_per_s": round(n_train * epochs_run / hist["seconds"]),
            "wall_cells_per_s": round(n_train * epochs_run / wall), "final_train_loss": float(hist["train_loss"][-1])}


def _scvi(adata, device: str, epochs: int, workdir: Path) -> dict:
    import logging

    import scvi

    for name in ("scvi", "lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    scvi.settings.verbosity = logging.ERROR
    scvi.settings.dl_num_workers = 0
    scvi.settings.logging_dir = str(workdir)
    scvi.settings.seed = 0
    from lightning.pytorch.callbacks import Callback

    class LoopTimer(Callback):  # the training loop alone, as history["seconds"] is for tl.vae
        start = end = None

        def on_train_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            self.end = time.perf_counter()

    timer = LoopTimer()
    a = adata.copy()
    _sync(device)
    start = time.perf_counter()
    scvi.model.SCVI.setup_anndata(a, batch_key="batch")
    model = scvi.model.SCVI(a, **ARCH, gene_likelihood="zinb", dispersion="gene")
    model.train(max_epochs=epochs, batch_size=BATCH_SIZE, train_size=0.9, early_stopping=False,
                accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1, enable_progress_bar=False,
                plan_kwargs={"lr": 1e-3}, callbacks=[timer])
    _sync(device)
    wall = time.perf_counter() - start
    loop = timer.end - timer.start
    n_train = len(model.train_indices)
    return {"epochs": epochs, "n_train": n_train, "wall_s": round(wall, 2), "loop_s": round(loop, 2),
            "cells_per_s": round(n_train * epochs / loop), "wall_cells_per_s": round(n_train * epochs / wall),
            "scvi_tools_version": scvi.__version__}


def main_check(args) -> int:
    import torch

    import scgen_ae as sa

    size = SIZES["tiny" if args.tiny else "full"]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch.cuda.is_available() is False (no GPU, or a CPU build of torch: "
              f"torch {torch.__version__}); nothing was run.", file=sys.stderr)
        return 3
    meta = {"device": args.device, "tiny": args.tiny, "torch": torch.__version__, "scgen_ae": sa.__version__,
            "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None, **size}
    rec = Recorder(args.out, meta)
    data = {}

    def build():
        data["big"] = resampled(size["n_cells"])
        data["small"] = data["big"][: size["n_small"]].copy()
        return {"shape": list(data["big"].shape), "batches": data["big"].obs["batch"].value_counts().to_dict()}

    if not rec.run("data", build):
        return 1
    if args.device.startswith("cuda"):  # CUDA context, cuBLAS handles: paid once, outside the timings
        rec.run("warmup", lambda: _vae(data["small"][:2000].copy(), args.device, 1, "fp32"))
    rec.run("vae_fp32", lambda: _vae(data["big"], args.device, size["epochs"], "fp32"))
    rec.run("vae_bf16", lambda: _vae(data["big"], args.device, size["epochs"], "bf16"))
    if not args.skip_scvi:
        rec.run("scvi", lambda: _scvi(data["big"], args.device, size["epochs"], args.out / "scvi_logs"))

    def denoise():
        a = data["small"].copy()
        model = sa.tl.denoise(a, method="dae", batch_key="batch", max_epochs=size["small_epochs"],
                              device=args.device, progress=False)
        assert np.isfinite(a.layers["denoised"]).all()
        return {"epochs": len(model.history["train_loss"])}

    def lda():
        a = data["small"].copy()
        model = sa.tl.lda(a, n_topics=8, batch_key="batch", max_epochs=size["small_epochs"], device=args.device,
                          progress=False)
        assert np.allclose(a.obsm["X_lda"].sum(1), 1, atol=1e-3)
        return {"epochs": len(model.history["train_loss"]), "perplexity": float(a.uns["lda"]["perplexity"])}

    def nmf():
        a = data["small"].copy()
        model = sa.tl.nmf(a, n_components=8, batch_key="batch", max_iter=20, device=args.device)
        assert np.isfinite(a.obsm["X_nmf"]).all()
        return {"passes": int(model.history["n_iter"])}

    rec.run("denoise", denoise)
    rec.run("lda", lda)
    rec.run("nmf", nmf)
    steps = rec.results["steps"]
    if "scvi" in steps and steps["scvi"]["status"] == steps["vae_fp32"]["status"] == "ok":
        ratio = steps["vae_fp32"]["cells_per_s"] / steps["scvi"]["cells_per_s"]
        rec.results["vae_fp32_over_scvi"] = round(ratio, 2)
        (args.out / "results.json").write_text(json.dumps(rec.results, indent=2, default=str))
        print(f"[gpu_check] tl.vae (fp32) trains {ratio:.2f}x as many cells/s as scvi-tools SCVI "
              "(training loops alone; wall_cells_per_s includes setup, latent and checks)", flush=True)
    failed = rec.failed()
    print(f"[gpu_check] {'FAILED: ' + ', '.join(failed) if failed else 'all steps ok'}; results in "
          f"{args.out / 'results.json'}", flush=True)
    return 1 if failed else 0


def ddp_worker(args) -> int:
    """One rank under ``torchrun``: ``tl.vae`` through the data-parallel training path.

    ``train.fit`` takes its DDP branch only for ``devices * num_nodes > 1``, and one GPU
    cannot hold two NCCL ranks. So the worker asks for 2 devices (to enter that branch)
    and builds the Fabric run for the world torchrun really started (here 1 process).
    Everything else runs as on several GPUs: process group (NCCL on CUDA, gloo on CPU),
    the DDP wrapper, sharding, all-reduced losses and early-stopping votes, the weight
    broadcast from rank 0, and streaming the cells from a backed ``.h5ad``.
    """
    import torch

    import scgen_ae as sa
    from scgen_ae import distributed

    world = int(os.environ["WORLD_SIZE"])
    build = distributed.Distributed.__init__

    def for_the_started_world(self, accelerator, devices, num_nodes):
        build(self, accelerator, world, 1)

    distributed.Distributed.__init__ = for_the_started_world
    size = SIZES["tiny" if args.tiny else "full"]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "ddp_cells.h5ad"
    rank = int(os.environ["RANK"])
    if rank == 0 and not path.exists():
        resampled(size["ddp_cells"]).write_h5ad(path)
    start = time.perf_counter()
    adata = sa.read_backed(path)
    model = sa.tl.vae(adata, batch_key="batch", **ARCH, max_epochs=size["small_epochs"], devices=2,
                      device=args.device, progress=False)
    result = {"status": "ok", "world_size": world, "rank": rank, "epochs": len(model.history["train_loss"]),
              "seconds": round(time.perf_counter() - start, 2),
              "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
              "module_device": str(next(model.module.parameters()).device)}
    assert np.isfinite(adata.obsm["X_vae"]).all(), "non-finite latent"
    (args.out / f"ddp_rank{rank}.json").write_text(json.dumps(result, indent=2))
    print(f"[gpu_check] ddp rank {rank}: " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--tiny", action="store_true", help="a few hundred cells, 2 epochs: a rehearsal of every step")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    p.add_argument("--skip-scvi", action="store_true")
    p.add_argument("--ddp-worker", action="store_true", help="run as one torchrun rank (see gpu_check.sh)")
    args = p.parse_args(argv)
    return ddp_worker(args) if args.ddp_worker else main_check(args)


if __name__ == "__main__":
    sys.exit(main())
