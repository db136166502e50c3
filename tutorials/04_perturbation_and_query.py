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
# # 4. Arithmetic in the latent space: predicting a perturbation, mapping a query
#
# A VAE's latent space is more than coordinates for a UMAP. Cells that differ by the same
# biological change tend to differ by the same *vector* in it, and new data can be placed
# in it without retraining on the old. Two uses follow:
#
# 1. **Perturbation prediction** (scGen, Lotfollahi et al., *Nat Methods* 2019). Learn
#    the shift that interferon-β causes in the latent space from the cell types you
#    observed under both conditions, apply it to the control cells of a type you never
#    saw stimulated, and decode: a prediction of that type's response.
# 2. **Query mapping** (scArches, Lotfollahi et al., *Nat Biotechnol* 2022). Train a
#    reference model once; to add a new batch, train only the model's weights for the
#    new batch (the reference's latent space does not move), then carry the reference's
#    labels over to the new cells by their neighbours.
#
# Data: Kang et al. 2018 PBMCs, control vs IFN-β stimulated; then CellBench, three cell
# lines on three protocols.

# %%
import os
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc

import scgen_ae as sa

# Small settings for CI (SCGEN_AE_TUTORIAL_SMALL=1): fewer genes and epochs, t-SNE instead
# of UMAP (UMAP's JIT compilation alone costs a minute); the same cells of code otherwise.
SMALL = os.environ.get("SCGEN_AE_TUTORIAL_SMALL") == "1"
N_GENES = 500 if SMALL else 2000
MAX_EPOCHS = 30 if SMALL else None  # None: the default schedule with early stopping
EMBEDDING = "tsne" if SMALL else "umap"
TRAIN = dict(seed=0, n_threads=1, progress=False)
FIGURES = Path(os.environ.get("SCGEN_AE_TUTORIAL_FIGURES", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
sc.settings.verbosity = 0
print(f"scgen_ae {sa.__version__}; small settings: {SMALL}")

# %% [markdown]
# ## Part 1: predicting the interferon response of unseen cells
#
# The Kang subset has 1,000 control and 1,000 stimulated PBMCs and no cell-type labels.
# `sa.pp.annotate_markers` labels clusters by canonical PBMC markers. With
# `groupby="batch"` it clusters each condition on its own, so that the interferon
# response (which touches every cell type) neither forms clusters of its own nor moves
# cells between labels.

# %%
kang = sa.datasets.load("kang_ifnb_pbmc_subset")
sa.pp.annotate_markers(kang, groupby="batch")
pd.crosstab(kang.obs["cell_type"], kang.obs["batch"])

# %% [markdown]
# Highly variable genes per condition, raw counts kept in a layer for the model, and
# log-normalised values in `X` for the differential-expression test below.

# %%
sa.pp.highly_variable(kang, n_top_genes=N_GENES, batch_key="batch")
sa.pp.drop_empty(kang)
kang.layers["counts"] = kang.X.copy()
sc.pp.normalize_total(kang, target_sum=1e4)
sc.pp.log1p(kang)
print(f"{kang.n_obs} cells x {kang.n_vars} genes")

# %% [markdown]
# ### Train without the cells to predict
#
# We pretend the stimulated CD14 monocytes were never measured: the model is trained on
# every other cell. `batch_key=None` matters: a conditional model would be told the
# condition and remove it from the latent space, and there would be no shift left to
# learn.

# %%
HOLD = "CD14_mono"
held_out = ((kang.obs["cell_type"] == HOLD) & (kang.obs["batch"] == "stim")).to_numpy()
model = sa.tl.vae(kang[~held_out].copy(), batch_key=None, layer="counts", n_latent=10, max_epochs=MAX_EPOCHS,
                  **TRAIN)
print(f"trained on {int((~held_out).sum())} cells; {int(held_out.sum())} stimulated {HOLD} held out")

# %% [markdown]
# ### Predict
#
# `sa.tl.predict` computes delta, the mean latent of stimulated minus control cells over
# the other cell types (each type weighted equally), adds it to the latents of the
# control CD14 monocytes, and decodes them. It returns a new AnnData of predicted cells
# and leaves `kang` alone.

# %%
pred = sa.tl.predict(model, kang, condition_key="batch", ctrl="ctrl", stim="stim", cell_type_key="cell_type",
                     predict=HOLD)
print(pred)
print("cell types behind delta:", ", ".join(map(str, pred.uns["predict"]["cell_types_used"])))

# %% [markdown]
# ### How good is the prediction?
#
# Now bring out the real stimulated CD14 monocytes. scGen's check: the mean expression of
# each gene in the prediction against the real stimulated cells, with R² over all genes
# and over the genes that respond most (the top differentially expressed genes between
# stimulated and control monocytes). The all-genes R² is high even for a prediction of
# "no change", since most genes do not respond; the top genes are the real test.

# %%
mono = kang[(kang.obs["cell_type"] == HOLD).to_numpy()].copy()
sc.tl.rank_genes_groups(mono, "batch", groups=["stim"], reference="ctrl", method="wilcoxon")
top_genes = list(mono.uns["rank_genes_groups"]["names"]["stim"][:20])
print("top responding genes:", ", ".join(top_genes[:10]))
sa.pl.response(kang, pred, condition_key="batch", cell_type=HOLD, genes=top_genes)

# %% [markdown]
# The same numbers against the obvious baseline, the control cells unchanged:

# %%
means = sa.tl.response_means(kang, pred, cell_type=HOLD, cell_type_key="cell_type")
top = np.isin(np.asarray(pred.var_names), top_genes)
pd.DataFrame({name: {"R² all genes": sa.tl.r_squared(means["stim"], means[name]),
                     "R² top 20 genes": sa.tl.r_squared(means["stim"][top], means[name][top])}
              for name in ["pred", "ctrl"]}).rename(columns={"pred": "predicted", "ctrl": "no change"}).round(3)

# %% [markdown]
# ### Removing a batch by the same arithmetic
#
# The shift can also be subtracted. `sa.tl.remove_batch` moves each batch's cells onto
# the others in the latent space of a model trained with `batch_key=None`. Without
# labels (as here) the shift is local, from mutual nearest neighbours between batches;
# with `cell_type_key` it is a per-type mean shift. Applied to the condition, it removes
# the interferon response from `obsm["X_vae_corrected"]`, e.g. to cluster cell types
# across conditions; on a technical batch it is a batch correction.

# %%
sa.tl.remove_batch(model, kang, batch_key="batch")
kang.obsm["X_vae"] = model.get_latent(kang)
sa.metrics.summary(kang, ["X_vae", "X_vae_corrected"], batch_key="batch", label_key="cell_type").round(3)

# %% [markdown]
# ## Part 2: mapping a new protocol onto a reference
#
# CellBench again (tutorial 1): three cell lines on 10x, CEL-seq2 and Drop-seq. The
# reference is the 10x and CEL-seq2 cells, with their labels; the query is the Drop-seq
# cells, whose labels we keep aside to check the transfer.

# %%
cellbench = sa.datasets.load("cellbench_3cl_3protocols_800genes")
is_query = (cellbench.obs["batch"] == "Drop-seq").to_numpy()
ref, query = cellbench[~is_query].copy(), cellbench[is_query].copy()
print(f"reference: {ref.n_obs} cells ({', '.join(ref.obs['batch'].unique())}); query: {query.n_obs} cells")

# %% [markdown]
# ### The reference model
#
# A conditional VAE on the reference protocols, exactly as in tutorial 1.

# %%
ref_model = sa.tl.vae(ref, batch_key="batch", n_latent=10, max_epochs=MAX_EPOCHS, **TRAIN)
ref_latent = ref.obsm["X_vae"].copy()

# %% [markdown]
# ### Surgery: `model.map_query`
#
# `map_query` adds rows for the new batch to the model's batch embeddings and trains only
# those; every other weight is frozen. So the reference cells keep their latent
# coordinates bit for bit, and the reference data is not needed, only the model (in
# practice: a file someone shared). The query's latents go to `query.obsm["X_vae"]`.

# %%
q_model = ref_model.map_query(query, batch_key="batch", max_epochs=MAX_EPOCHS, **TRAIN)
print(q_model.batch_categories, query.obsm["X_vae"].shape)
print("reference latent unchanged:", np.array_equal(q_model.get_latent(ref), ref_latent))

# %% [markdown]
# ### Label transfer
#
# `sa.tl.transfer_labels` gives each query cell the label its nearest reference cells
# vote for (Gaussian-weighted kNN in the shared latent space), and an uncertainty: one
# minus the winning label's share of the votes, 0 when all neighbours agree. The
# predictions go to `cell_type_transferred`, so the query's true labels stay.

# %%
sa.tl.transfer_labels(query, reference=ref, label_key="cell_type")
correct = query.obs["cell_type_transferred"].astype(str) == query.obs["cell_type"].astype(str)
print(f"accuracy on the Drop-seq cells: {correct.mean():.1%}")
pd.crosstab(query.obs["cell_type"], query.obs["cell_type_transferred"], rownames=["true"], colnames=["transferred"])

# %% [markdown]
# The uncertainty is what to look at on real data, where there is no truth to compare:
# on average, the wrong labels come with a much higher uncertainty than the right ones.

# %%
unc = query.obs["cell_type_transferred_uncertainty"]
unc.groupby(correct.map({True: "correct", False: "wrong"})).describe().round(3)

# %% [markdown]
# It also flags cell types the reference does not have. Remove H1975 from the reference
# and transfer again: the H1975 query cells must get a wrong label, but they get it with
# a much higher uncertainty than the others.

# %%
partial = ref[ref.obs["cell_type"] != "H1975"].copy()
q2 = sa.tl.transfer_labels(query, reference=partial, label_key="cell_type", copy=True)
q2.obs["cell_type_transferred_uncertainty"].groupby(q2.obs["cell_type"], observed=True).mean().round(3)

# %% [markdown]
# ### Query and reference together
#
# In the joint latent space the Drop-seq cells fall in with the reference cells of their
# cell line. The figure below (the README's gallery image) puts it next to the
# prediction of part 1.

# %%
ref.obs["label"] = ref.obs["cell_type"].astype(str)  # the reference's labels, the query's transferred ones
query.obs["label"] = query.obs["cell_type_transferred"].astype(str)
joint = ad.concat({"reference": ref, "query": query}, label="side", index_unique="-")
joint.obs["label"] = joint.obs["label"].astype("category")
sa.pl.latent(joint, basis="X_vae", color=["batch", "label"], method=EMBEDDING)

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
ax = axes[0]
ax.scatter(means["stim"], means["pred"], s=6, c="lightgrey", label=f"all genes: R² = "
           f"{sa.tl.r_squared(means['stim'], means['pred']):.2f}")
ax.scatter(means["stim"][top], means["pred"][top], s=12, c="tab:red", label=f"top 20 genes: R² = "
           f"{sa.tl.r_squared(means['stim'][top], means['pred'][top]):.2f}")
lim = [0, float(max(means["stim"].max(), means["pred"].max())) * 1.05]
ax.plot(lim, lim, ls=":", c="grey")
ax.set(xlabel="observed stim mean", ylabel="predicted stim mean", title=f"tl.predict: stimulated {HOLD}")
ax.legend(frameon=False, loc="upper left")
sc.pl.embedding(joint, basis=f"X_vae_{EMBEDDING}", color="batch", ax=axes[1], show=False, size=10,
                title="map_query: protocol", frameon=False)
sc.pl.embedding(joint, basis=f"X_vae_{EMBEDDING}", color="label", ax=axes[2], show=False, size=10,
                title="cell line (query: transferred)", frameon=False)
fig.tight_layout()
fig.savefig(FIGURES / "04_perturbation_and_query.png", dpi=72)
plt.show()

# %% [markdown]
# ## What next
#
# - `q_model.save("mapped.npz")` keeps the extended model; map more batches the same way.
# - Query genes are matched to the model's by name; missing genes need
#   `map_query(..., pad_missing=True)` (zeros, with a warning).
# - For perturbation prediction on your data, hold out one cell type at a time and check
#   the R² on its top genes before trusting predictions for a type never measured.
