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
# # 1. Batch correction of a multi-protocol dataset with `tl.vae`
#
# The same three lung-adenocarcinoma cell lines (H1975, H2228, HCC827) were sequenced
# with three protocols: 10x Chromium, CEL-seq2 and Drop-seq (CellBench, Tian et al.,
# *Nat Methods* 2019). The cell lines are the biology; the protocol is a technical
# batch effect, and a strong one: the protocols capture different numbers of molecules
# per cell and favour different genes. Because the ground truth is known, this dataset
# shows clearly what a good integration does: cells of one cell line come together
# whatever their protocol, and the three cell lines stay apart.
#
# We will
#
# 1. look at the data and the batch effect in an uncorrected PCA (UMAP and t-SNE),
# 2. train a conditional ZINB variational autoencoder (`sa.tl.vae`) on the raw counts,
# 3. look at its latent space and score the integration,
# 4. save the model, reload it, and
# 5. decode batch-corrected expression.
#
# Run it as a notebook (`jupytext --to notebook 01_batch_correction.py`) or as a script.
# It takes about four minutes of one CPU core (training about 1.5, the scIB scores about
# 1.5); with `SCGEN_AE_TUTORIAL_SMALL=1` (15 epochs) about one minute plus the scores.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc

import scgen_ae as sa

# Small settings for the CI run of this tutorial (SCGEN_AE_TUTORIAL_SMALL=1): fewer epochs.
# Everything else is identical, so CI checks every cell of the tutorial you read.
SMALL = os.environ.get("SCGEN_AE_TUTORIAL_SMALL") == "1"
MAX_EPOCHS = 15 if SMALL else None  # None: the default schedule (up to 400 epochs, early stopping)
FIGURES = Path(os.environ.get("SCGEN_AE_TUTORIAL_FIGURES", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
sc.settings.verbosity = 0
print(f"scgen_ae {sa.__version__}; small settings: {SMALL}")

# %% [markdown]
# ## The data
#
# `sa.datasets.load` reads a local copy of the shared dataset (or downloads it into
# `~/.cache/scgen_ae` from a mirror, see its docstring). `X` holds raw UMI counts: the
# VAE models counts directly, so nothing is normalised before training.

# %%
adata = sa.datasets.load("cellbench_3cl_3protocols_800genes")
adata.layers["counts"] = adata.X.copy()  # keep the raw counts: X will be log-normalised for PCA
print(adata)
pd.crosstab(adata.obs["cell_type"], adata.obs["batch"])

# %% [markdown]
# Every cell line is present in every protocol, in similar proportions. That matters:
# batch correction assumes the batches share cell types, and the VAE's MMD penalty
# (on by default) pulls the batches' latent distributions together.
#
# The protocols differ a lot in depth, which is the first thing a correction must absorb:

# %%
adata.obs["total_counts"] = np.asarray(adata.layers["counts"].sum(1)).ravel()
adata.obs.groupby("batch", observed=True)["total_counts"].median().rename("median counts per cell")

# %% [markdown]
# ## Genes
#
# Deep models of scRNA-seq are usually trained on a few thousand highly variable genes
# (HVGs): the rest adds noise and time, not signal. Select them on the raw counts with
# the `seurat_v3` flavour and `batch_key`, so that genes variable only because of the
# protocol are not favoured. This file is already a 799-gene panel (see the data
# README), so we keep all of its genes; on a whole transcriptome the same call keeps 2,000.

# %%
sa.pp.drop_empty(adata, layer="counts")  # cells or genes without a single count carry no information
if adata.n_vars > 2000:
    sa.pp.highly_variable(adata, n_top_genes=2000, batch_key="batch", layer="counts")
print(f"{adata.n_obs} cells x {adata.n_vars} genes")

# %% [markdown]
# ## Before: the batch effect in an uncorrected PCA
#
# The standard scanpy route: normalise each cell to 10,000 counts, log-transform, PCA.
# Both the UMAP and the t-SNE of that PCA split cells by protocol first: within each
# protocol the three cell lines separate, but the same cell line sits in different
# places depending on how it was sequenced.

# %%
sc.pp.normalize_total(adata, target_sum=1e4)
sc.pp.log1p(adata)
sc.pp.pca(adata, n_comps=30, random_state=0)
sa.pl.latent(adata, basis="X_pca", color=["batch", "cell_type"], method="umap")

# %%
sa.pl.latent(adata, basis="X_pca", color=["batch", "cell_type"], method="tsne")

# %% [markdown]
# ## Training the VAE
#
# `sa.tl.vae` encodes each cell's counts (and its batch) into a 10-dimensional latent
# `z`, and decodes `z` plus the batch into the parameters of a zero-inflated negative
# binomial (ZINB) over the raw counts. Since the decoder is told the batch, `z` does not
# need to carry it: the protocol's effect is explained by the decoder, and `z` keeps
# the biology. The library size enters the likelihood directly, so the depth
# differences above need no normalisation.
#
# `layer="counts"` points the model at the raw counts (X is log-normalised now). 10 % of
# the cells are held out to pick the best epoch and stop early. `seed` and `n_threads`
# make the run bit-for-bit reproducible on the CPU.

# %%
model = sa.tl.vae(adata, batch_key="batch", layer="counts", likelihood="zinb", n_latent=10,
                  max_epochs=MAX_EPOCHS, seed=0, n_threads=1, progress=False)
history = adata.uns["vae"]["history"]
print(model)
print(f"{len(history['train_loss'])} epochs in {history['seconds']:.1f} s, best epoch {history['best_epoch'] + 1}")
sa.pl.history(adata, key="vae")

# %% [markdown]
# The loss is the negative ELBO per cell. The validation curve should flatten, not
# rise: if it rose while the training loss kept falling, the model would be
# memorising the training cells.
#
# ## After: the latent space
#
# The posterior means are in `adata.obsm["X_vae"]`, one row per cell, ready for any
# scanpy tool that takes a representation (`sc.pp.neighbors(adata, use_rep="X_vae")`,
# Leiden clustering, ...). Now the protocols mix and the cell lines separate.

# %%
sa.pl.latent(adata, basis="X_vae", color=["batch", "cell_type"], method="umap")

# %%
sa.pl.latent(adata, basis="X_vae", color=["batch", "cell_type"], method="tsne")

# %% [markdown]
# The same comparison in one figure (it is the README's gallery image):

# %%
fig, axes = plt.subplots(2, 2, figsize=(9, 7.5))
for row, (basis, title) in enumerate([("X_pca_umap", "uncorrected PCA"), ("X_vae_umap", "tl.vae")]):
    for col, key in enumerate(["batch", "cell_type"]):
        sc.pl.embedding(adata, basis=basis, color=key, ax=axes[row, col], show=False, size=12,
                        title=f"{title}: {key}", frameon=False)
fig.tight_layout()
fig.savefig(FIGURES / "01_batch_correction.png", dpi=72)
plt.show()

# %% [markdown]
# ## Scoring the integration
#
# Pictures can mislead, so we measure. Two families of scores matter: **batch
# correction** (are the batches mixed among each cell's neighbours?) and **bio
# conservation** (do the known cell lines stay apart?). A method that smears everything
# together scores well on the first and badly on the second; both must be high.
#
# `sa.metrics.summary` gives quick versions of both with no extra dependency:
# `batch_entropy` and `batch_simpson` (1 = batches perfectly mixed), `ari` (KMeans clusters vs the
# cell lines) and `label_silhouette` (1 = labels perfectly apart).

# %%
sa.metrics.summary(adata, ["X_pca", "X_vae"], batch_key="batch", label_key="cell_type").round(3)

# %% [markdown]
# `sa.tl.score_integration` runs the full scIB metric set (Luecken et al., *Nat
# Methods* 2022) through scib-metrics' `Benchmarker`, the numbers integration papers
# report: `Total = 0.6 x Bio conservation + 0.4 x Batch correction`. scib-metrics is an
# optional dependency (`pip install "scgen-ae[bench]"`); without it this cell says so
# and moves on.

# %%
try:
    import scib_metrics  # noqa: F401
except ImportError:
    print('scib-metrics is not installed: pip install "scgen-ae[bench]" to get the scIB scores.')
else:
    scores = sa.tl.score_integration(adata, bases=["X_pca", "X_vae"], batch_key="batch",
                                     label_key="cell_type", pre_integrated_key="X_pca")
    print(scores[["Bio conservation", "Batch correction", "Total"]].round(3))

# %% [markdown]
# ## Saving and reloading the model
#
# `model.save` writes one `.npz` file: the weights, the architecture, the genes and the
# batches it was trained on, and a checksum. It holds no pickled Python objects, so
# loading a file from someone else cannot run code. `load(..., adata=adata)` also checks
# that `adata` has every gene the model needs.

# %%
path = model.save("cellbench_vae.npz")
reloaded = sa.VAE.load(path, adata=adata)
same = np.array_equal(reloaded.get_latent(adata), model.get_latent(adata))
print(f"saved to {path} ({path.stat().st_size / 1e6:.2f} MB); reloaded latent identical: {same}")

# %% [markdown]
# ## Batch-corrected expression
#
# The latent space is for neighbours, clustering and visualisation. For gene-level
# questions, decode expression back: `transform_batch="10x"` decodes every cell as if
# it had been sequenced with 10x, which removes the protocol's effect on each gene,
# and `library_size=1e4` puts every cell at the same depth. The result is an
# (n_cells x n_genes) array of expected counts per 10,000; `log1p` of it is comparable
# to log-normalised data. Store it in a layer: X keeps the observed data.

# %%
# a cells x genes data frame (scvi-tools' return type); return_numpy=True gives the array
corrected = reloaded.get_normalized_expression(adata, transform_batch="10x", library_size=1e4)
adata.layers["vae_corrected"] = np.log1p(corrected.to_numpy())
print(adata.layers["vae_corrected"].shape)

# %% [markdown]
# Take the gene whose mean log-expression differs most between protocols. In the
# observed data its level depends on the protocol as much as on the cell line; after
# correction, each cell line has one level whatever the protocol.

# %%
observed = pd.DataFrame(adata.X.toarray(), index=adata.obs_names, columns=adata.var_names)
batch_means = observed.groupby(adata.obs["batch"], observed=True).mean()
gene = (batch_means.max() - batch_means.min()).idxmax()
table = pd.DataFrame({
    "observed": observed[gene],
    "corrected": adata[:, gene].layers["vae_corrected"].ravel(),
    "batch": adata.obs["batch"].to_numpy(),
    "cell_type": adata.obs["cell_type"].to_numpy(),
})
print(f"mean log-expression of {gene} per cell line (rows) and protocol (columns)")
table.pivot_table(index="cell_type", columns="batch", values=["observed", "corrected"], observed=True).round(2)

# %% [markdown]
# ## What next
#
# - On your own data: raw counts in `X` (or a layer), a batch column in `obs`, then the
#   same calls. From the shell, `scgen-ae integrate file.h5ad --batch-key batch` does
#   these steps in one go.
# - If the batches hold different cell types, lower `mmd_weight` (or set it to 0).
# - The benchmarks against scVI and Harmony are in `BENCHMARKS.md`.
