# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Scaling: training from a file on disk, checkpoints and resuming
#
# An atlas of millions of cells does not fit in a laptop's memory, and often not in a
# server's: 10^6 cells x 2,000 genes is already 8 GB as dense float32, and a whole
# transcriptome is ten times more. `scgen_ae` trains from the file instead. `X` stays
# on disk; the training loop reads contiguous chunks of cells (fast on disk), shuffles
# at the level of chunks, and reads ahead in a background thread. Memory no longer
# grows with the number of cells. Inference streams the same way, and the results
# (`obsm["X_vae"]`, `uns`) are written to the in-memory `obs`/`obsm` as usual.
#
# Long runs also need to survive being stopped: a checkpoint holds the weights, the
# optimiser state, the history and the random state, and `resume=True` continues the
# run exactly where it stopped.
#
# Here we build a small "atlas" by resampling real PBMCs, write it to disk once, and
# train from it. The same calls work on 10^6 cells (see BENCHMARKS.md for the figures).

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc
import scipy.sparse as sp

import scgen_ae as sa

SMALL = os.environ.get("SCGEN_AE_TUTORIAL_SMALL") == "1"
N_CELLS = 6_000 if SMALL else 50_000
MAX_EPOCHS = 4 if SMALL else 30
TRAIN = dict(seed=0, n_threads=1, progress=False)
workdir = Path(tempfile.mkdtemp(prefix="scgen_ae_tutorial5_"))
FIGURES = Path(os.environ.get("SCGEN_AE_TUTORIAL_FIGURES", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
print(f"scgen_ae {sa.__version__}, scanpy {sc.__version__}; small settings: {SMALL}")

# %% [markdown]
# ## An atlas on disk
#
# Resample the PBMCs of three 10x chemistries up to `N_CELLS` cells, each new cell a
# binomially thinned copy of a real cell of the same batch (so it is a new sample of
# molecules, not a duplicate), and write it as a compressed `.h5ad` with a CSR `X`:
# the layout `write_h5ad` uses for a sparse matrix, and the one the reader streams.

# %%
pbmc = sa.datasets.load("pbmc_10x_chemistries")
sc.pp.highly_variable_genes(pbmc, n_top_genes=1000 if SMALL else 2000, flavor="seurat_v3", batch_key="batch",
                            subset=True)
rng = np.random.default_rng(0)
rows = rng.integers(0, pbmc.n_obs, N_CELLS)
X = pbmc.X[rows].tocsr()
X.data = rng.binomial(X.data.astype(np.int64), 0.8).astype(np.float32)
X.eliminate_zeros()
atlas = sc.AnnData(X, obs=pbmc.obs.iloc[rows][["batch"]].reset_index(drop=True), var=pbmc.var[[]])
atlas.obs_names = [f"cell{i}" for i in range(N_CELLS)]
keep = np.asarray(X.sum(1)).ravel() > 0
atlas = atlas[keep].copy()
path = workdir / "atlas.h5ad"
atlas.write_h5ad(path, compression="gzip")
print(f"{atlas.n_obs} cells x {atlas.n_vars} genes written to {path} ({path.stat().st_size / 1e6:.1f} MB)")
del atlas, X

# %% [markdown]
# ## Training from the file
#
# `sa.read_backed` opens the file with `obs` and `var` in memory and `X` on disk. Every
# `tl.vae` argument works as usual; the only difference is where the counts come from.

# %%
backed = sa.read_backed(path)
print(backed)
print("X is on disk:", backed.isbacked)
model = sa.tl.vae(backed, batch_key="batch", max_epochs=MAX_EPOCHS, **TRAIN)
hist = backed.uns["vae"]["history"]
print(f"{len(hist['train_loss'])} epochs in {hist['seconds']:.1f} s; obsm['X_vae']: {backed.obsm['X_vae'].shape}")

# %% [markdown]
# Is anything lost by streaming? Train the same model in memory with the same seed and
# compare the final validation losses: they should agree to within the noise of the
# different cell order (chunk-level rather than cell-level shuffling).

# %%
in_memory = sc.read_h5ad(path)
sa.tl.vae(in_memory, batch_key="batch", max_epochs=MAX_EPOCHS, **TRAIN)
for name, ad in [("from disk", backed), ("in memory", in_memory)]:
    h = ad.uns["vae"]["history"]
    print(f"{name:>10}: best validation loss {min(h['validation_loss']):.2f}, {h['seconds']:.1f} s")

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
for name, ad in [("from disk", backed), ("in memory", in_memory)]:
    h = ad.uns["vae"]["history"]
    ax.plot(np.arange(1, len(h["validation_loss"]) + 1), h["validation_loss"], marker="o", label=name)
ax.set(xlabel="epoch", ylabel="validation loss (-ELBO per cell)", title=f"tl.vae on {backed.n_obs:,} cells")
ax.legend()
fig.tight_layout()
fig.savefig(FIGURES / "05_scaling.png", dpi=72)
plt.show()

# %% [markdown]
# ## Checkpoints and resuming
#
# With `checkpoint_path`, the run writes a safe `.npz` checkpoint (no pickle) every
# `checkpoint_every` epochs. Say the first run was stopped after 2 epochs (a time limit
# on a cluster, a pre-empted node); the second call with `resume=True` continues from
# the checkpoint and ends exactly where an uninterrupted run ends.

# %%
ckpt = workdir / "run.npz"
short = sa.read_backed(path)
sa.tl.vae(short, batch_key="batch", max_epochs=2, checkpoint_path=ckpt, early_stopping=False, **TRAIN)
resumed = sa.read_backed(path)
sa.tl.vae(resumed, batch_key="batch", max_epochs=MAX_EPOCHS, checkpoint_path=ckpt, resume=True,
          early_stopping=False, **TRAIN)
straight = sa.read_backed(path)
sa.tl.vae(straight, batch_key="batch", max_epochs=MAX_EPOCHS, early_stopping=False, **TRAIN)
print("resumed run == uninterrupted run:", np.array_equal(resumed.obsm["X_vae"], straight.obsm["X_vae"]))

# %% [markdown]
# ## Several GPUs
#
# Put `devices=8` (and `num_nodes=N` on a cluster) in the same call and start the
# script with `torchrun --nproc_per_node=8 script.py`. Each process reads its own chunks
# of the same file; the losses and the early-stopping decision are averaged across
# processes, so they all stop together and return the same model. The README's
# "Atlases" section has the multi-node command and BENCHMARKS.md the arithmetic for
# 10^7 cells on 8 GPUs.
