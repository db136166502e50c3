"""The composition check: batches that do not hold the same cell types are named, balanced ones are not."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import scgen_ae as sa
from scgen_ae.composition import batch_composition

from .conftest import load_shared


def _remove(adata, batch, cell_type):
    keep = ~((adata.obs["batch"] == batch) & (adata.obs["cell_type"] == cell_type)).to_numpy()
    return adata[keep].copy()


def test_counts_and_missing_pairs():
    groups = np.array(["A"] * 50 + ["B"] * 50 + ["C"] * 40)
    batches = np.array(["x"] * 25 + ["y"] * 25 + ["x"] * 25 + ["y"] * 25 + ["x"] * 40)
    report = batch_composition(groups, batches, source="labels 'g'")
    assert report.counts.loc["C"].tolist() == [40, 0]
    assert report.missing[["group", "batch"]].values.tolist() == [["C", "y"]]
    assert report.share_affected == pytest.approx(40 / 140)
    assert "C (40 cells) has almost no cells of batch 'y'" in report.describe()


def test_small_groups_and_proportion_shifts_are_not_flagged():
    # a 3-to-1 imbalance is a proportion, not a missing type; a 6-cell group predicts too few cells
    groups = np.array(["A"] * 100 + ["B"] * 100 + ["tiny"] * 6)
    batches = np.array(["x"] * 75 + ["y"] * 25 + ["x"] * 50 + ["y"] * 50 + ["x"] * 6)
    assert batch_composition(groups, batches).balanced


@pytest.fixture(scope="module")
def cellbench():
    return load_shared("cellbench_3cl")


def test_front_by_labels_fires_on_a_design_with_a_batch_unique_type(cellbench):
    adata = _remove(cellbench, "Drop-seq", "HCC827")
    with pytest.warns(sa.tl.CompositionWarning, match=r"HCC827 \(\d+ cells\) has almost no cells of batch 'Drop-seq'"):
        sa.tl.batch_composition(adata, batch_key="batch", groupby="cell_type")
    result = adata.uns["batch_composition"]
    assert list(result["missing_group"]) == ["HCC827"] and list(result["missing_batch"]) == ["Drop-seq"]
    hcc = (adata.obs["cell_type"] == "HCC827").mean()
    assert result["share_affected"] == pytest.approx(hcc)


def test_front_by_labels_is_silent_on_the_balanced_file(cellbench):
    adata = cellbench.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", sa.tl.CompositionWarning)
        sa.tl.batch_composition(adata, batch_key="batch", groupby="cell_type")
    assert adata.uns["batch_composition"]["share_affected"] == 0.0


def test_front_refuses_missing_inputs_and_leaves_adata_unchanged(cellbench, snapshot):
    adata = cellbench.copy()
    snap = snapshot(adata)
    with pytest.raises(sa.InputError, match="label_key='celltype' is not a column"):
        sa.tl.batch_composition(adata, batch_key="batch", groupby="celltype")
    with pytest.raises(sa.InputError, match="use_rep='X_vae' is not in adata.obsm"):
        sa.tl.batch_composition(adata, batch_key="batch", use_rep="X_vae")
    snap.assert_unchanged(adata)
