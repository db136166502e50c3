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
# # 2. Denoising counts, and checking the denoiser on counts it never saw
#
# A 10x cell holds a few thousand molecules out of hundreds of thousands of mRNAs: most
# genes read 0 in most cells even where they are expressed, and the non-zero counts are
# noisy. A denoiser replaces each count by the expected count the model predicts from
# the whole cell (and from similar cells), which makes marker genes readable cell by
# cell. DCA did this with a ZINB autoencoder; `sa.tl.denoise` is that idea, on counts,
# with batches as covariates, so the same call can also decode every cell as if it came
# from one chosen batch.
#
# But a denoiser can also invent signal. So before trusting it we measure it: hide 10 %
# of the observed counts, train on what is left, and compare its predictions for the
# hidden entries with the truth, against a trivial baseline.
#
# Data: PBMCs from three 10x chemistries (3' v2, 3' v3, 5'), raw UMI counts.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc

import scgen_ae as sa

# Small settings for CI (SCGEN_AE_TUTORIAL_SMALL=1): fewer genes and epochs, same cells of code.
SMALL = os.environ.get("SCGEN_AE_TUTORIAL_SMALL") == "1"
MAX_EPOCHS = 10 if SMALL else None  # None: the default schedule with early stopping
N_GENES = 1000 if SMALL else 2000
FIGURES = Path(os.environ.get("SCGEN_AE_TUTORIAL_FIGURES", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
sc.settings.verbosity = 0
TRAIN = dict(max_epochs=MAX_EPOCHS, n_threads=1, progress=False)
print(f"scgen_ae {sa.__version__}, scanpy {sc.__version__}; small settings: {SMALL}")

# %% [markdown]
# ## The data
#
# Keep the highly variable genes (selected on counts, per chemistry), plus three
# markers we want to look at: CD3E (T cells), MS4A1 (B cells) and LYZ (monocytes).

# %%
adata = sa.datasets.load("pbmc_10x_chemistries")
markers = ["CD3E", "MS4A1", "LYZ"]
sc.pp.highly_variable_genes(adata, n_top_genes=N_GENES, flavor="seurat_v3", batch_key="batch")
adata = adata[:, adata.var["highly_variable"] | adata.var_names.isin(markers)].copy()
sa.pp.drop_empty(adata)
print(adata)
frac_zero = 1 - adata.X.nnz / np.prod(adata.shape)
print(f"{frac_zero:.0%} of the entries are zero")

# %% [markdown]
# ## Is the denoiser better than a trivial guess?
#
# `sa.tl.denoise_benchmark` hides a random 10 % of the non-zero counts (sets them to 0),
# trains the denoiser on the corrupted matrix and predicts the hidden entries. The
# `seed` fixes both the hidden entries and the training. The
# baseline predicts each hidden count as the gene's share of all counts times the
# cell's library size: what you get with no model at all. Lower absolute error and
# higher correlation are better. `adata` is not modified.

# %%
table = sa.tl.denoise_benchmark(adata, batch_key="batch", fraction=0.1, seed=0, **TRAIN)
table.round(3)

# %% [markdown]
# The denoiser predicts the counts it never saw far better than the baseline: it has
# learned the co-expression structure of the cells, not just gene averages.
#
# ## Denoising
#
# Now train on all counts. The output, `layers["denoised"]`, holds expected counts at
# each cell's observed library size (pass `library_size=1e4` for normalised values);
# `X` keeps the raw counts. `obsm["X_dae"]` is the bottleneck, a compact representation
# of each cell.

# %%
model = sa.tl.denoise(adata, batch_key="batch", likelihood="zinb", seed=0, **TRAIN)
print(model)
print(adata)

# %% [markdown]
# Raw against denoised, per chemistry (left, middle) and per cell (right, coloured by
# chemistry). Raw counts of a marker are mostly 0 and 1; cells with the same raw count get
# a range of denoised values, set by the rest of their expression. Which cells get high
# values is not visible here (there are no cell-type labels in this data): the UMAP below
# shows it.

# %%
sa.pl.denoising(adata, genes=markers, batch_key="batch")

# %% [markdown]
# On the UMAP of the log-normalised counts (log1p values; cells drawn in file order, so
# none is hidden under its neighbours), the raw counts of CD3E (T cells) and MS4A1 (B
# cells) are speckled: many cells of each population have a 0 for its own marker, the
# dark dots inside the bright region. The denoised values (bottom row) fill those in, so
# the whole population is marked, and stay low in the other populations. LYZ has many
# counts per monocyte and is clear in the raw counts already.

# %%
view = adata.copy()
sc.pp.normalize_total(view, target_sum=1e4)
sc.pp.log1p(view)
sc.pp.pca(view, n_comps=30, random_state=0)
sc.pp.neighbors(view, random_state=0)
sc.tl.umap(view, random_state=0)
for g in markers:
    view.obs[f"{g} raw"] = np.log1p(adata[:, g].X.toarray().ravel())
    view.obs[f"{g} denoised"] = np.log1p(adata[:, g].layers["denoised"].ravel())
# sort_order=False: cells drawn in file order, so a 0 inside a population is not hidden under its neighbours
sc.pl.umap(view, color=[f"{g} {kind}" for kind in ("raw", "denoised") for g in markers], ncols=3, show=False,
           frameon=False, size=10, sort_order=False)
plt.gcf().savefig(FIGURES / "02_denoising.png", dpi=48, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Denoised and batch-corrected at once
#
# With `transform_batch`, every cell is decoded as if it had been sequenced with one
# chemistry, here 3' v3: the chemistry's gene-wise bias is removed from the denoised
# values. The same works on a trained `sa.tl.vae` model with `method="vae"` (or by
# passing `model=`), which uses the VAE's decoder.

# %%
for layer, batch in [("denoised_1e4", None), ("denoised_as_v3", "pbmc1k_3p_v3")]:
    sa.tl.denoise(adata, model=model, transform_batch=batch, library_size=1e4, layer_added=layer)
genes = ["LYZ", "CD3E"]
for layer in ["denoised_1e4", "denoised_as_v3"]:
    print(f"{layer}: mean per 10,000 counts, per chemistry")
    print(adata.to_df(layer)[genes].groupby(adata.obs["batch"], observed=True).mean().round(2))

# %% [markdown]
# Both layers are at 10,000 counts per cell, so depth is out of the picture. Decoded in
# each cell's own chemistry, the means differ between chemistries partly because the
# chemistries capture genes differently; decoded as 3' v3, that part is gone and what
# remains is the cells themselves (these are different donors and samples, so some
# difference in composition stays, as it should).

# %% [markdown]
# ## What next
#
# - `return_info=True` also stores the dropout probabilities and dispersions.
# - On large data, `genes=[...]` restricts the output to the genes you need (a dense
#   cells x genes matrix of float32 takes 4 bytes per entry).
# - From the shell: `scgen-ae denoise in.h5ad -o out.h5ad --batch-key batch`.
# - The comparison with scVI's denoised means is in `BENCHMARKS.md`.
