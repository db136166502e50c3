"""Marker-based annotation of the unlabelled PBMC files (used by benchmarks and tl.predict)."""
import numpy as np
import pytest

import scgen_ae as sa

from .conftest import Snapshot, load_shared


@pytest.fixture(scope="module")
def kang():
    adata = load_shared("kang_ifnb_pbmc_subset")
    sa.pp.annotate_markers(adata, groupby="batch")
    return adata


def _log_expr(adata, gene):
    x = np.asarray(adata[:, gene].X.toarray()).ravel()
    lib = np.asarray(adata.X.sum(1)).ravel()
    return np.log1p(x / lib * 1e4)


@pytest.mark.parametrize("label, gene", [("B", "MS4A1"), ("NK", "NKG7"), ("CD14_mono", "LYZ"),
                                         ("CD4_T", "CD3E"), ("FCGR3A_mono", "FCGR3A")])
def test_each_label_expresses_its_marker(kang, label, gene):
    inside = kang.obs["cell_type"].to_numpy() == label
    expr = _log_expr(kang, gene)
    assert inside.sum() >= 20
    assert expr[inside].mean() > 2 * expr[~inside].mean()


def test_labels_are_shared_by_both_conditions(kang):
    # annotation within each condition: the IFN response must not create condition-only labels
    table = kang.obs.groupby(["cell_type", "batch"], observed=False).size().unstack()
    assert (table.min(axis=1) >= 5).all(), table
    assert set(kang.uns["cell_type"]["markers"]) >= {"B", "NK", "CD14_mono"}
    assert kang.obsm["cell_type_scores"].shape == (kang.n_obs, len(kang.uns["cell_type"]["markers"]))


def test_no_marker_genes_is_refused_and_changes_nothing():
    adata = sa.datasets.simulate(n_cells=200, n_genes=100)
    snap = Snapshot(adata)
    with pytest.raises(sa.InputError, match="None of the marker genes"):
        sa.pp.annotate_markers(adata)
    snap.assert_unchanged(adata)
