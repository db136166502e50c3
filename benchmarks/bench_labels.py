#!/usr/bin/env python
"""By-hand benchmark: semi-supervised labels on CellBench's three protocols.

Data: ``cellbench_3cl_3protocols_800genes`` (1,394 cells x 799 genes, batches 10x /
CEL-seq2 / Drop-seq, three cell lines). Two designs hide labels:

- ``one protocol``: labels are kept only in the cells of ``--labelled-protocol`` (10x by
  default), every other cell is "Unknown";
- ``10 %``: a random 10 % of all cells keep their label (seeded).

Three tools predict the hidden labels, each from the same counts and ``batch_key="batch"``:

- ``scgen_ae``: ``sa.tl.vae(..., label_key, unlabeled_category="Unknown")`` (its defaults,
  ``max_epochs=--epochs``) then ``sa.tl.predict_labels``;
- ``SCANVI``: scvi-tools ``SCVI`` (ZINB, ``max_epochs=--epochs``) then
  ``SCANVI.from_scvi_model`` trained with its own default epochs, ``predict()``;
- ``kNN``: ``sa.tl.vae`` without labels (same settings), then ``sa.tl.transfer_labels``
  from the labelled to the unlabelled cells in its latent space.

Scores: accuracy on the cells whose label was hidden, and scIB Total
(``sa.tl.score_integration``, true labels, all cells) of each tool's latent space (kNN's is
the unsupervised ``tl.vae`` latent). One thread; seeds ``--seeds``.

Usage::

    python benchmarks/bench_labels.py --seeds 0 1 --out bench_out/labels
    python benchmarks/bench_labels.py --epochs 5 --seeds 0 --no-scib     # smoke test
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vae import DATA_DIR  # noqa: E402

DATASET = "cellbench_3cl_3protocols_800genes"
UNKNOWN = "Unknown"


def hide_labels(adata, design: str, seed: int, protocol: str) -> np.ndarray:
    """Boolean mask (n_cells,) of the cells that keep their label."""
    if design == "one protocol":
        return (adata.obs["batch"].astype(str) == protocol).to_numpy()
    return np.random.default_rng(seed).random(adata.n_obs) < 0.10


def run_ours(adata, seed, epochs):
    import scgen_ae as sa

    start = time.perf_counter()
    model = sa.tl.vae(adata, batch_key="batch", label_key="partial", unlabeled_category=UNKNOWN, max_epochs=epochs,
                      seed=seed, n_threads=1, progress=False, key_added="X_ours")
    sa.tl.predict_labels(adata, model, key_added="pred_ours")
    return adata.obs["pred_ours"].astype(str).to_numpy(), time.perf_counter() - start


def run_knn(adata, seed, epochs, labelled):
    import scgen_ae as sa

    start = time.perf_counter()
    sa.tl.vae(adata, batch_key="batch", max_epochs=epochs, seed=seed, n_threads=1, progress=False, key_added="X_knn")
    ref, query = adata[labelled].copy(), adata[~labelled].copy()
    sa.tl.transfer_labels(query, reference=ref, label_key="partial", basis="X_knn", key_added="pred_knn")
    pred = adata.obs["partial"].astype(str).to_numpy().copy()
    pred[~labelled] = query.obs["pred_knn"].astype(str).to_numpy()
    return pred, time.perf_counter() - start


def run_scanvi(adata, seed, epochs):
    import scvi
    import torch

    for name in ("scvi", "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    scvi.settings.verbosity = logging.ERROR
    scvi.settings.dl_num_workers = 0
    scvi.settings.seed = seed
    torch.set_num_threads(1)
    start = time.perf_counter()
    work = adata.copy()
    scvi.model.SCVI.setup_anndata(work, batch_key="batch", labels_key="partial")
    base = scvi.model.SCVI(work, gene_likelihood="zinb")
    base.train(max_epochs=epochs, batch_size=128, accelerator="cpu", devices=1, enable_progress_bar=False)
    model = scvi.model.SCANVI.from_scvi_model(base, unlabeled_category=UNKNOWN, labels_key="partial")
    model.train(accelerator="cpu", devices=1, enable_progress_bar=False)
    adata.obsm["X_scanvi"] = model.get_latent_representation()
    return np.asarray(model.predict(), dtype=str), time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=200, help="max_epochs of tl.vae and of SCVI")
    p.add_argument("--labelled-protocol", default="10x")
    p.add_argument("--designs", nargs="+", default=["one protocol", "10 %"])
    p.add_argument("--no-scib", action="store_true")
    p.add_argument("--out", type=Path, default=Path("bench_out/labels"))
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import anndata as ad

    import scgen_ae as sa

    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for design in args.designs:
            adata = ad.read_h5ad(DATA_DIR / f"{DATASET}.h5ad")
            truth = adata.obs["cell_type"].astype(str).to_numpy()
            labelled = hide_labels(adata, design, seed, args.labelled_protocol)
            adata.obs["partial"] = pd.Categorical(np.where(labelled, truth, UNKNOWN))
            preds = {}
            preds["scgen_ae"] = run_ours(adata, seed, args.epochs)
            preds["SCANVI"] = run_scanvi(adata, seed, args.epochs)
            preds["kNN (tl.vae)"] = run_knn(adata, seed, args.epochs, labelled)
            bases = {"scgen_ae": "X_ours", "SCANVI": "X_scanvi", "kNN (tl.vae)": "X_knn"}
            total = {}
            if not args.no_scib:
                scores = sa.tl.score_integration(adata, bases=list(bases.values()), batch_key="batch",
                                                 label_key="cell_type")
                total = {tool: float(scores.loc[key, "Total"]) for tool, key in bases.items()}
            for tool, (pred, seconds) in preds.items():
                acc = float((pred[~labelled] == truth[~labelled]).mean())
                rows.append(dict(seed=seed, design=design, tool=tool, n_labelled=int(labelled.sum()),
                                 accuracy=acc, scib_total=total.get(tool, np.nan), seconds=seconds))
                print(f"[bench_labels] seed {seed} {design} {tool}: accuracy {acc:.3f}, scIB Total "
                      f"{total.get(tool, np.nan):.3f}, {seconds:.0f} s", flush=True)
            pd.DataFrame(rows).to_csv(args.out.with_suffix(".csv"), index=False)  # kept if cut short
    df = pd.DataFrame(rows)
    summary = df.groupby(["design", "tool"], sort=False).agg(
        accuracy=("accuracy", "mean"), accuracy_min=("accuracy", "min"), scib_total=("scib_total", "mean"),
        seconds=("seconds", "mean"), seeds=("seed", "count")).reset_index()
    lines = ["| design | tool | accuracy on unlabelled (mean; min) | scIB Total | s per run | seeds |",
             "|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r['design']} | {r['tool']} | {r['accuracy']:.3f}; {r['accuracy_min']:.3f} | "
                     f"{r['scib_total']:.3f} | {r['seconds']:.0f} | {r['seeds']} |")
    table = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
