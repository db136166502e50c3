"""The composition check: batches that do not hold the same cell types are named, balanced ones are not."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import scgen_ae as sa
from scgen_ae.composition import batch_composition, unmatched_clusters

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
    assert "unmixed" not in report.describe()  # labels are what they are


def _blobs(centres, n, rng):
    return np.concatenate([rng.normal(c, 1.0, size=(n, 2)) for c in centres])


def test_a_cluster_far_from_every_cell_of_another_batch_is_unmatched():
    """Three blobs in batch x, the same two of them in batch y (2x the cells), blobs 10 SD apart."""
    rng = np.random.default_rng(0)
    z = np.concatenate([_blobs([(0, 0), (10, 0), (0, 10)], 60, rng), _blobs([(0, 0), (10, 0)], 120, rng)])
    batches = np.array(["x"] * 180 + ["y"] * 240)
    report = unmatched_clusters(z, batches, source="clusters of 'X_vae'")
    assert set(report.missing["batch"]) == {"y"}
    flagged = report.missing["group"].unique()
    assert len(flagged) == 1 and flagged[0].endswith("of 'x'")
    assert report.share_affected == pytest.approx(60 / 420, abs=0.02)
    # clusters say that poor mixing looks the same, and how to tell
    text = report.describe()
    assert "has no cells of batch 'y' near it" in text and "batches left unmixed" in text and "label_key=" in text
    # the same blobs in both batches, in other proportions: nothing is flagged
    z = np.concatenate([_blobs([(0, 0), (10, 0), (0, 10)], 60, rng), _blobs([(0, 0), (10, 0), (0, 10)], 30, rng)])
    assert unmatched_clusters(z, np.array(["x"] * 180 + ["y"] * 90)).balanced


def test_unmatched_cells_are_barred_from_the_batch_they_lack_and_only_from_it():
    """Blob (0, 10) is in batch x only: its cells are barred from y; a subsample gives the
    cells left out the groups of their nearest sampled cells."""
    rng = np.random.default_rng(1)
    z = np.concatenate([_blobs([(0, 0), (10, 0), (0, 10)], 60, rng), _blobs([(0, 0), (10, 0)], 120, rng)])
    batches = np.array(["x"] * 180 + ["y"] * 240)
    only_x = np.zeros(len(z), dtype=bool)
    only_x[120:180] = True
    for max_cells in (len(z), 300):
        barred = unmatched_clusters(z, batches, max_cells=max_cells).unmatched(["y", "x"])
        assert barred.shape == (len(z), 2) and not barred[:, 1].any()
        assert np.array_equal(barred[:, 0], only_x)


def test_the_mnn_alignment_pairs_no_barred_cell_with_the_batch_it_lacks():
    import torch

    from scgen_ae.models.vae import _mnn_pairs, mnn_correction

    rng = torch.Generator().manual_seed(0)
    # batch 1 is batch 0 with a little noise: every cell has its twin as a partner
    z, x = torch.randn(20, 4, generator=rng), torch.rand(20, 30, generator=rng)
    z = torch.cat([z, z + 0.01 * torch.randn(20, 4, generator=rng)])
    x = torch.cat([x, x + 0.01 * torch.rand(20, 30, generator=rng)])
    batch = torch.arange(40) // 20
    _, free = _mnn_pairs(z, batch, x, 3)
    unmatched = torch.zeros(40, 2, dtype=torch.bool)
    paired = int(free[:, batch == 1].any(1).nonzero()[0])  # a cell with a partner in batch 1
    unmatched[paired, 1] = True
    _, pairs = _mnn_pairs(z, batch, x, 3, unmatched)
    assert not pairs[paired].any() and not pairs[:, paired].any()
    others = torch.ones(40, dtype=torch.bool)
    others[paired] = False
    assert torch.equal(pairs[others][:, others], free[others][:, others])
    # every cell barred from every other batch: nothing pulls, no penalty
    assert mnn_correction(z, batch, x, 3, 0.5, unmatched=torch.ones(40, 2, dtype=torch.bool)) == 0


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
    with pytest.warns(sa.tl.CompositionWarning, match=r"HCC827 \(\d+ cells\) has almost no cells of batch "
                      r"'Drop-seq'") as record:
        sa.tl.batch_composition(adata, batch_key="batch", groupby="cell_type")
    assert {w.filename for w in record} == {__file__}  # the caller's line
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


# ---------------------------------------------------------------- the alignment keeps batch-unique types apart

def _two_batches_one_unique_type():
    """Types A and B in both batches (batch 1 shifted by +1.5 in y), type C in batch 0 only."""
    import torch

    gen = torch.Generator().manual_seed(0)
    centres = {"A": torch.tensor([0.0, 0.0]), "B": torch.tensor([10.0, 0.0]), "C": torch.tensor([5.0, 8.0])}
    cells, batch, kind = [], [], []
    for b, types in ((0, "ABC"), (1, "AB")):
        for t in types:
            cells.append(centres[t] + torch.randn(20, 2, generator=gen) + torch.tensor([0.0, 1.5 * b]))
            batch += [b] * 20
            kind += [t] * 20
    return torch.cat(cells), torch.tensor(batch), np.array(kind)


def test_mutual_pairs_leave_out_a_type_other_batches_lack():
    """Two batches share types A and B; type C is in batch 0 only. C has no mutual neighbours,
    and every pair joins cells of one type."""
    import torch

    from scgen_ae.models.vae import mutual_pairs

    z, batch, kind = _two_batches_one_unique_type()
    d2 = torch.cdist(z, z) ** 2
    pairs = mutual_pairs(d2, batch, 3).numpy()
    paired = pairs.any(1)
    assert not paired[kind == "C"].any()
    assert paired[kind != "C"].mean() > 0.2
    rows, cols = np.nonzero(pairs)
    assert (kind[rows] == kind[cols]).all() and (batch.numpy()[rows] != batch.numpy()[cols]).all()


def test_mnn_correction_moves_neighbourhoods_not_a_batch_unique_type():
    """The smoothed correction draws unpaired cells of shared types along their neighbours' pairs
    (toward the other batch), which the pair attraction cannot; the batch-unique type gets no pull."""
    import torch

    from scgen_ae.models.vae import _mnn_pairs, mnn_attraction, mnn_correction

    z, batch, kind = _two_batches_one_unique_type()
    x = torch.cat([z, torch.full((len(z), 1), 5.0)], 1)  # an input whose cosine follows z
    paired = _mnn_pairs(z, batch, x, 3)[1].any(1).numpy()
    assert paired[kind != "C"].mean() > 0.2 and not paired[kind == "C"].any()
    shared_unpaired = (kind != "C") & ~paired
    for penalty, moves_unpaired in ((lambda t: mnn_correction(t, batch, x, 3, 0.5), True),
                                    (lambda t: mnn_attraction(t, batch, x, 3), False)):
        leaf = z.clone().requires_grad_(True)
        penalty(leaf).backward()
        grad = leaf.grad.numpy()
        assert np.abs(grad[kind == "C"]).max() < 1e-6
        moved = np.abs(grad[shared_unpaired]).sum(1) > 1e-8
        if moves_unpaired:
            assert moved.mean() > 0.8
            # gradient descent moves batch 1 down (toward batch 0) and batch 0 up
            b = batch.numpy()
            assert (grad[shared_unpaired & (b == 1), 1] > 0).mean() > 0.8
            assert (grad[shared_unpaired & (b == 0), 1] < 0).mean() > 0.8
        else:
            assert not moved.any()


def _purity(z, labels, of, k=15):
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z, return_distance=False)[:, 1:]
    return float((labels[idx] == labels[:, None]).mean(1)[labels == of].mean())


def test_vae_keeps_a_batch_unique_type_apart_and_says_so(cellbench_hvg2000):
    """HCC827 removed from Drop-seq: the default alignment must not pull it onto the other lines.

    The bar comes from the same design: uncorrected PCA keeps HCC827 apart (purity ~1), and the
    integrated latent must keep at least 90 % of PCA's purity (the global MMD reached ~0.71)."""
    import scanpy as sc

    adata = _remove(cellbench_hvg2000, "Drop-seq", "HCC827")
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    base = adata.copy()
    sc.pp.normalize_total(base, target_sum=1e4)
    sc.pp.log1p(base)
    sc.pp.pca(base, n_comps=10, random_state=0)
    bar = 0.9 * _purity(base.obsm["X_pca"], labels, "HCC827")
    with pytest.warns(sa.tl.CompositionWarning, match="has almost no cells of batch 'Drop-seq'"):
        model = sa.tl.vae(adata, batch_key="batch", label_key="cell_type", seed=0, n_threads=1, progress=False)
    purity = _purity(adata.obsm["X_vae"], labels, "HCC827")
    assert purity >= bar, f"HCC827 purity {purity:.3f} < 0.9 x PCA's ({bar:.3f})"
    missing = adata.uns["vae"]["composition"]
    assert list(missing["missing_batch"]) == ["Drop-seq"]
    assert model.config.mmd_mnn_k > 0


def test_without_labels_the_check_finds_the_type_one_batch_lacks_and_auto_keeps_it_apart(cellbench_hvg2000):
    """HCC827 removed from Drop-seq, no labels: the unmatched HCC827 cluster of CEL-seq2 is named,
    and mmd_mnn_k="auto" keeps the MNN alignment (the global MMD merged HCC827)."""
    adata = _remove(cellbench_hvg2000, "Drop-seq", "HCC827")
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    with pytest.warns(sa.tl.CompositionWarning, match="of 'CEL-seq2' .* has no cells of batch 'Drop-seq' near it"):
        model = sa.tl.vae(adata, batch_key="batch", mmd_mnn_k="auto", seed=0, n_threads=1, progress=False)
    alignment = adata.uns["vae"]["alignment"]
    assert model.config.mmd_mnn_k == 3 and not alignment["balanced"]
    record = adata.uns["vae"]["composition"]
    flagged = np.isin(labels, ["HCC827"])  # the flagged clusters are mostly HCC827, a fifth of the cells
    assert 0.5 * flagged.mean() <= record["share_affected"] <= 2 * flagged.mean()
    # at the end of the warm-up the check bars those cells from pairing with Drop-seq
    assert 0.5 * flagged.mean() <= alignment["share_unpaired"] <= 1.5 * flagged.mean()


def test_vae_composition_check_is_silent_on_the_balanced_file(cellbench_hvg2000):
    adata = cellbench_hvg2000.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", sa.tl.CompositionWarning)
        sa.tl.vae(adata, batch_key="batch", seed=0, n_threads=1, progress=False)
    assert adata.uns["vae"]["composition"]["share_affected"] == 0.0


def test_vae_auto_alignment_follows_the_labels(cellbench_hvg2000):
    """mmd_mnn_k='auto' with labels decides before training: MNN attraction where a batch lacks a type,
    the global MMD where the batches hold the same types."""
    unbalanced = _remove(cellbench_hvg2000, "Drop-seq", "HCC827")
    with pytest.warns(sa.tl.CompositionWarning):
        model = sa.tl.vae(unbalanced, batch_key="batch", label_key="cell_type", mmd_mnn_k="auto", seed=0,
                          n_threads=1, progress=False, max_epochs=3)
    assert model.config.mmd_mnn_k == 3
    record = unbalanced.uns["vae"]["alignment"]
    assert record["requested"] == "auto" and not record["balanced"] and record["used"].startswith("MNN")
    assert "before training" in record["decided_by"]
    balanced = cellbench_hvg2000.copy()
    model = sa.tl.vae(balanced, batch_key="batch", label_key="cell_type", mmd_mnn_k="auto", seed=0,
                      n_threads=1, progress=False, max_epochs=3)
    assert model.config.mmd_mnn_k == 0 and balanced.uns["vae"]["alignment"]["used"] == "global MMD"
    assert balanced.uns["vae"]["params"]["mmd_mnn_k"] == 0  # the file says what was trained


def test_vae_auto_alignment_without_labels_decides_within_one_fit(cellbench_hvg2000):
    """Without labels, auto checks the MNN-aligned latent at the end of the KL warm-up, within
    one fit; where it fires, the flagged cells are barred from pairing with the batch they lack
    for the rest of the fit, so the latent differs from mmd_mnn_k=3's."""
    unbalanced = _remove(cellbench_hvg2000, "Drop-seq", "HCC827")
    options = dict(batch_key="batch", seed=0, n_threads=1, progress=False, max_epochs=30, early_stopping=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sa.tl.CompositionWarning)
        auto = sa.tl.vae(unbalanced, mmd_mnn_k="auto", **options)
        mnn = _remove(cellbench_hvg2000, "Drop-seq", "HCC827")
        sa.tl.vae(mnn, mmd_mnn_k=3, **options)
    record = unbalanced.uns["vae"]["alignment"]
    assert record["decided_by"].startswith("clusters of each batch in the MNN-aligned latent after epoch 10")
    assert not record["balanced"] and auto.config.mmd_mnn_k == 3
    assert record["share_unpaired"] > 0  # 10 epochs in, most clusters are still apart: many are barred
    assert not np.array_equal(unbalanced.obsm["X_vae"], mnn.obsm["X_vae"])
    assert len(auto.history["train_loss"]) == 30  # one fit, not a refit after it


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), "wide", True])
def test_vae_refuses_a_bad_mnn_bandwidth_before_any_work(cellbench_hvg2000, bad):
    adata = cellbench_hvg2000.copy()
    with pytest.raises(ValueError, match="mnn_bandwidth"):
        sa.tl.vae(adata, batch_key="batch", mnn_bandwidth=bad, progress=False)
    assert "vae" not in adata.uns and "X_vae" not in adata.obsm


def test_model_files_without_mnn_bandwidth_load_with_the_pair_attraction(tmp_path, cellbench_hvg2000):
    """Files written before the smoothed correction were trained with the pair attraction
    (bandwidth 0): they must load saying so, so that further training (map_query) matches."""
    from scgen_ae.io import read_model_file, write_model_file

    model = sa.tl.vae(cellbench_hvg2000.copy(), batch_key="batch", seed=0, n_threads=1, progress=False,
                      max_epochs=1)
    assert model.config.mnn_bandwidth == 0.5
    path = model.save(tmp_path / "old.scgen")
    header, arrays = read_model_file(path)  # rewrite the file as one written before the field
    del header["config"]["mnn_bandwidth"]
    write_model_file(path, {k: v for k, v in header.items() if k not in ("format", "format_version", "sha256")},
                     arrays)
    old = sa.models.VAE.load(path)
    assert old.config.mnn_bandwidth == 0.0 and old.config.mmd_mnn_k == model.config.mmd_mnn_k


@pytest.mark.parametrize("bad", [-1, 2.5, "mnn", True])
def test_vae_refuses_a_bad_mmd_mnn_k(cellbench_hvg2000, bad):
    with pytest.raises(ValueError, match="mmd_mnn_k"):
        sa.tl.vae(cellbench_hvg2000.copy(), batch_key="batch", mmd_mnn_k=bad, progress=False)


def test_remove_batch_without_labels_keeps_types_each_batch_lacks_apart(cellbench_hvg2000):
    """H1975 removed from CEL-seq2 and H2228 from Drop-seq: in a model without batch, the two
    lines' nearest cells across the batches are each other, and a shift from z-only mutual
    neighbours moved one onto the other (purity ~0.5). The bar: 85 % of uncorrected PCA's
    purity on the same cells (a few wrong pairs still pass the input check: ~0.86 for H1975)."""
    import scanpy as sc

    adata = _remove(_remove(cellbench_hvg2000, "CEL-seq2", "H1975"), "Drop-seq", "H2228")
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    base = adata.copy()
    sc.pp.normalize_total(base, target_sum=1e4)
    sc.pp.log1p(base)
    sc.pp.pca(base, n_comps=10, random_state=0)
    model = sa.tl.vae(adata, seed=0, n_threads=1, progress=False)
    sa.tl.remove_batch(model, adata, batch_key="batch")
    corrected = adata.obsm["X_vae_corrected"]
    for line in ("H1975", "H2228"):
        bar = 0.85 * _purity(base.obsm["X_pca"], labels, line)
        assert _purity(corrected, labels, line) >= bar, line
    # and the batches are still brought together where they share a line (HCC827)
    hcc = labels == "HCC827"
    batch = adata.obs["batch"].astype(str).to_numpy()
    before = sa.metrics.batch_entropy(adata.obsm["X_vae"][hcc], batch[hcc])
    assert sa.metrics.batch_entropy(corrected[hcc], batch[hcc]) > before + 0.1


def test_remove_batch_leaves_a_batch_without_pairs_where_it_is(cellbench_hvg2000, monkeypatch):
    """A batch that pairs with no merged cell shares no type with them as far as the data show:
    it stays put (a mean shift would pull its types onto theirs), with a warning."""
    from scgen_ae.tl import _remove_batch

    adata = cellbench_hvg2000.copy()
    model = sa.tl.vae(adata, seed=0, n_threads=1, progress=False, max_epochs=3)
    monkeypatch.setattr(_remove_batch, "_mnn_shift", lambda *args: None)
    with pytest.warns(UserWarning, match="left where it is"):
        sa.tl.remove_batch(model, adata, batch_key="batch")
    # remove_batch encodes the cells again, with every core rather than the fit's one thread:
    # equal up to float32 rounding
    np.testing.assert_allclose(adata.obsm["X_vae_corrected"], adata.obsm["X_vae"], rtol=1e-5, atol=1e-6)


def test_denoise_vae_warns_only_about_its_own_outputs(cellbench_3protocols, monkeypatch):
    """denoise(method="vae") trains through tl.vae but writes no uns['composition']: no tl.vae warning
    pointing there, "auto"'s check during training still runs, and the one warning left is about
    transform_batch decoding cells as a batch that lacks their type."""
    import scgen_ae.tl._vae as vae_front

    calls = []
    report = vae_front.composition_report
    monkeypatch.setattr(vae_front, "composition_report", lambda *a, **k: calls.append(k) or report(*a, **k))
    adata = _remove(cellbench_3protocols, "Drop-seq", "HCC827")
    fast = dict(batch_key="batch", n_latent=4, n_hidden=32, max_epochs=6, seed=0, n_threads=1, progress=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sa.tl.denoise(adata.copy(), method="vae", mmd_mnn_k="auto", **fast)
    assert [k["label_key"] for k in calls] == [None]  # the check of the latent during training, once
    assert not [w for w in record if "composition" in str(w.message) or "tl.vae" in str(w.message)]
    with pytest.warns(sa.tl.CompositionWarning, match=r"^tl\.denoise: .*HCC827 \(\d+ cells\) has almost no cells "
                      r"of batch 'Drop-seq'.*transform_batch='Drop-seq'") as record:
        sa.tl.denoise(adata, method="vae", mmd_mnn_k="auto", label_key="cell_type", transform_batch="Drop-seq",
                      **fast)
    assert not [w for w in record if "uns[" in str(w.message)]
    assert {w.filename for w in record if w.category is sa.tl.CompositionWarning} == {__file__}
    assert adata.uns["denoise"]["params"]["label_key"] == "cell_type" and "composition" not in adata.uns["denoise"]
