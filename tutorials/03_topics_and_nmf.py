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
# # 3. Topic models and NMF: interpretable factors, with and without batch correction
#
# A VAE's latent dimensions are good coordinates but hard to read: a dimension is not a
# gene program. Factor models trade some flexibility for interpretability. They describe
# each cell as a non-negative mixture of a few *programs*, and each program as a
# non-negative weighting of genes, so "what is factor 3?" has an answer: its top genes.
#
# - **Topic models** (LDA) treat a cell's counts as draws from a mixture of topics, each
#   topic a distribution over genes. `sa.tl.lda` fits ProdLDA, a neural topic model
#   (Srivastava & Sutton 2017), or with `method="classic"` the textbook LDA.
# - **NMF** factorises the log-normalised matrix as cells x factors times factors x genes,
#   all non-negative. `sa.tl.nmf` is sklearn-style NMF, or with `batch_key` LIGER's
#   integrative NMF.
#
# Both have a batch-aware variant. Without it, a strong technical batch becomes a topic
# (or a factor) of its own, and the cell proportions separate the protocols. We will fit
# both variants of both models on CellBench (three lung cancer cell lines, CEL-seq2 and
# Drop-seq), read the programs, and score how well each mixes the protocols while
# keeping the cell lines apart.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc

import scgen_ae as sa

# Small settings for CI (SCGEN_AE_TUTORIAL_SMALL=1): fewer genes and epochs, t-SNE instead
# of UMAP (UMAP's JIT compilation alone costs a minute); the same cells of code otherwise.
SMALL = os.environ.get("SCGEN_AE_TUTORIAL_SMALL") == "1"
N_GENES = 1000 if SMALL else 2000
N_TOPICS = 10
MAX_EPOCHS = 40 if SMALL else None  # None: ProdLDA's defaults (up to 100 epochs, early stopping)
EMBEDDING = "tsne" if SMALL else "umap"
TRAIN = dict(seed=0, n_threads=1, progress=False)
FIGURES = Path(os.environ.get("SCGEN_AE_TUTORIAL_FIGURES", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
sc.settings.verbosity = 0
pd.set_option("display.max_columns", 12)
pd.set_option("display.width", 160)
print(f"scgen_ae {sa.__version__}; small settings: {SMALL}")

# %% [markdown]
# ## The data
#
# 499 cells of three cell lines (H1975, H2228, HCC827), sequenced with CEL-seq2 and
# Drop-seq. Both models take raw counts: LDA models them directly, and NMF log-normalises
# them itself (`transform="log1p"`). We keep `X` as counts and select highly variable
# genes per protocol, as in tutorial 1.

# %%
adata = sa.datasets.load("cellbench_3cl")
sa.pp.drop_empty(adata)
sa.pp.highly_variable(adata, n_top_genes=N_GENES, batch_key="batch")
print(f"{adata.n_obs} cells x {adata.n_vars} genes")
pd.crosstab(adata.obs["cell_type"], adata.obs["batch"])

# %% [markdown]
# A baseline to compare against: the PCA of log-normalised data (on a copy, so `X` keeps
# the counts).

# %%
lognorm = adata.copy()
sc.pp.normalize_total(lognorm, target_sum=1e4)
sc.pp.log1p(lognorm)
sc.pp.pca(lognorm, n_comps=N_TOPICS, random_state=0)
adata.obsm["X_pca"] = lognorm.obsm["X_pca"]

# %% [markdown]
# ## Topic models
#
# `sa.tl.lda` with `batch_key` gives the decoder a per-protocol gene background, shows the
# encoder the protocol, and adds an MMD penalty that pulls the protocols' topic
# proportions together: the topics are left to explain what the protocols share. The
# plain fit (no `batch_key`) goes to other keys (`key_added`, `varm_key`, `uns_key`), so
# both stay in `adata` side by side.
#
# Each call writes the cell x topic proportions to `obsm` (rows sum to 1), the
# gene x topic distributions to `varm` (columns sum to 1) and a record to `uns`.

# %%
lda_batch = sa.tl.lda(adata, n_topics=N_TOPICS, batch_key="batch", max_epochs=MAX_EPOCHS, **TRAIN)
lda_plain = sa.tl.lda(adata, n_topics=N_TOPICS, max_epochs=MAX_EPOCHS, key_added="X_lda_plain",
                      varm_key="lda_plain_topics", uns_key="lda_plain", **TRAIN)
print(adata.obsm["X_lda"].shape, adata.varm["lda_topics"].shape)
print(f"held-out perplexity: batch-aware {adata.uns['lda']['perplexity']:.0f}, "
      f"plain {adata.uns['lda_plain']['perplexity']:.0f}")

# %% [markdown]
# ### Reading the topics
#
# A topic is its top genes. `sa.pl.topics` draws them as bar charts; `sa.pl.top_genes`
# gives the same as a table, handy for gene-set enrichment.

# %%
sa.pl.topics(adata, key="lda", n_genes=10)

# %%
sa.pl.top_genes(adata, key="lda", n_genes=8)

# %% [markdown]
# Which topics does each cell line use? The mean proportion per cell line and protocol.
# With batch correction a topic is used by the same cell line in both protocols; a topic
# used mostly in one protocol would be a batch topic.

# %%
def mean_usage(key: str) -> pd.DataFrame:
    usage = pd.DataFrame(adata.obsm[key], index=adata.obs_names,
                         columns=[f"topic {i}" for i in range(adata.obsm[key].shape[1])])
    return usage.groupby([adata.obs["cell_type"], adata.obs["batch"]], observed=True).mean().round(2)


mean_usage("X_lda")

# %%
mean_usage("X_lda_plain")

# %% [markdown]
# ## NMF and integrative NMF
#
# `sa.tl.nmf` without `batch_key` is plain NMF of the log-normalised data. With it, it
# fits LIGER's integrative NMF: loadings shared by all protocols plus a penalised
# protocol-specific part, then aligns the cell factors across protocols by quantiles, so
# `obsm["X_nmf"]` is batch corrected.

# %%
nmf_batch = sa.tl.nmf(adata, n_components=N_TOPICS, batch_key="batch", seed=0, n_threads=1)
nmf_plain = sa.tl.nmf(adata, n_components=N_TOPICS, seed=0, n_threads=1, key_added="X_nmf_plain",
                      varm_key="nmf_plain_loadings", uns_key="nmf_plain")
history = adata.uns["nmf"]["history"]
print(f"iNMF: {history['n_iter']} passes in {history['seconds']:.1f} s, converged: {history['converged']}")
sa.pl.top_genes(adata, key="nmf", n_genes=8)

# %% [markdown]
# `sa.pl.loadings` shows how much each cell uses a factor, on any 2-D layout: here the
# t-SNE/UMAP of the factors themselves. A factor that marks one cell line lights up one
# cluster, in both protocols.

# %%
sa.pl.loadings(adata, basis="X_nmf", components=[0, 1, 2], method=EMBEDDING)

# %% [markdown]
# ## Batch-aware vs plain, in pictures
#
# The embeddings of the plain and batch-aware fits, coloured by protocol and by cell
# line. Plain LDA and NMF split each cell line by protocol; the batch-aware fits put the
# protocols together and keep the three cell lines apart.

# %%
sa.pl.latent(adata, basis="X_lda_plain", color=["batch", "cell_type"], method=EMBEDDING)

# %%
sa.pl.latent(adata, basis="X_lda", color=["batch", "cell_type"], method=EMBEDDING)

# %%
sa.pl.latent(adata, basis="X_nmf_plain", color=["batch", "cell_type"], method=EMBEDDING)

# %%
sa.pl.latent(adata, basis="X_nmf", color=["batch", "cell_type"], method=EMBEDDING)

# %% [markdown]
# The four in one figure (the README's gallery image):

# %%
fig, axes = plt.subplots(2, 4, figsize=(13, 6))
for col, (basis, title) in enumerate([("X_lda_plain", "LDA"), ("X_lda", "LDA, batch_key"),
                                      ("X_nmf_plain", "NMF"), ("X_nmf", "iNMF, batch_key")]):
    for row, key in enumerate(["batch", "cell_type"]):
        sc.pl.embedding(adata, basis=f"{basis}_{EMBEDDING}", color=key, ax=axes[row, col], show=False, size=12,
                        title=f"{title}: {key}", frameon=False, legend_loc="none" if col < 3 else "right margin")
fig.tight_layout()
fig.savefig(FIGURES / "03_topics_and_nmf.png", dpi=72)
plt.show()

# %% [markdown]
# ## Scoring
#
# The same quick scores as in tutorial 1: `batch_entropy` and `batch_simpson` (1 = protocols
# mixed among each cell's neighbours), `ari` and `label_silhouette` (1 = cell lines
# apart). A good integration is high on both sides; plain fits score low on mixing.

# %%
bases = ["X_pca", "X_lda_plain", "X_lda", "X_nmf_plain", "X_nmf"]
sa.metrics.summary(adata, bases, batch_key="batch", label_key="cell_type").round(3)

# %% [markdown]
# ## Classic LDA and perplexity
#
# `method="classic"` is the textbook LDA (Blei et al. 2003) fitted by batch variational
# Bayes, as sklearn's `LatentDirichletAllocation`: no neural network, no batch
# covariate. How well does a topic model fit? Every fit holds out 10 % of the cells and
# reports their **perplexity** per count in `uns[uns_key]["perplexity"]`: lower means the
# model predicts unseen cells' counts better (it is exp of minus the mean log-likelihood
# per count; the vocabulary size, here the number of genes, is the perplexity of a
# uniform guess). Compare fits on the same genes and cells only.

# %%
sa.tl.lda(adata, n_topics=N_TOPICS, method="classic", key_added="X_lda_classic", varm_key="lda_classic_topics",
          uns_key="lda_classic", max_iter=10 if SMALL else 20, **TRAIN)
pd.DataFrame({key: {"held-out perplexity": adata.uns[key]["perplexity"],
                    "training perplexity": adata.uns[key]["train_perplexity"]}
              for key in ["lda_classic", "lda_plain", "lda"]}).round(1)

# %% [markdown]
# Perplexity measures how well a model predicts counts, not whether it mixes batches or
# separates cell types: the classic LDA, fitted to convergence by variational Bayes, can
# predict held-out counts as well as or better than ProdLDA while its proportions still
# carry the protocol. Read it next to the scores above. Its main use is choosing
# `n_topics` for one method: fit a few values and take the point where the held-out
# perplexity stops improving.

# %% [markdown]
# ## What next
#
# - Models are saved and loaded like the VAE: `lda_batch.save("lda.npz")`,
#   `sa.LDA.load(...)`, `sa.NMF.load(...)`; `model.transform(new_adata)` gives the
#   proportions / factors of new cells.
# - `sa.tl.nmf(..., batch_size=2048)` updates online and keeps memory independent of the
#   number of cells; `loss="kl", solver="mu", transform="none"` is Poisson NMF of counts.
# - The scIB benchmark of the topic models on this dataset is in `BENCHMARKS.md`.
