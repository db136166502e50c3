"""Latent arithmetic (issue 7) on the shared real data: query mapping (VAE.map_query) with
label transfer on CellBench, scGen-style prediction on Kang, batch removal by arithmetic,
pl.response; every documented error leaves the AnnData unchanged."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scanpy as sc

import scgen_ae as sa
from scgen_ae.train import History

from .conftest import FAST, Snapshot, assert_same_latent, load_shared

QUERY = "Drop-seq"  # CellBench: reference = 10x + CEL-seq2, query = Drop-seq
MAP_KW = dict(max_epochs=30, seed=0, **FAST)


def _lognorm_pca_entropy(adata, key="batch"):
    tmp = adata.copy()
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    sc.pp.pca(tmp, n_comps=10)
    return sa.metrics.batch_entropy(tmp.obsm["X_pca"], tmp.obs[key].astype(str))


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def cb_mapping(cellbench_3protocols):
    """(reference, query, reference model, reference latent before mapping, mapped model)."""
    is_q = (cellbench_3protocols.obs["batch"] == QUERY).to_numpy()
    ref, query = cellbench_3protocols[~is_q].copy(), cellbench_3protocols[is_q].copy()
    model = sa.tl.vae(ref, batch_key="batch", n_latent=10, **MAP_KW)
    before = model.get_latent(ref)
    state = {k: t.clone() for k, t in model.module.state_dict().items()}
    mapped = model.map_query(query, batch_key="batch", **MAP_KW)
    return ref, query, model, before, state, mapped


@pytest.fixture(scope="session")
def sim3():
    return sa.datasets.simulate(n_cells=300, n_genes=120, n_batches=3, n_groups=3, seed=1)


# ---------------------------------------------------------------- map_query

def test_reference_latent_does_not_move(cb_mapping):
    ref, _, model, before, state, mapped = cb_mapping
    assert_same_latent(mapped.get_latent(ref), before)  # the weights below: bit for bit
    assert_same_latent(ref.obsm["X_vae"], before)
    # the reference model object itself was not modified
    for k, t in model.module.state_dict().items():
        assert np.array_equal(t.numpy(), state[k].numpy()), k
    assert model.batch_categories == ["10x", "CEL-seq2"]
    assert mapped.batch_categories == ["10x", "CEL-seq2", QUERY]
    assert mapped.config.n_batches == 3


def test_only_the_new_batch_rows_changed(cb_mapping):
    _, query, model, _, _, mapped = cb_mapping
    ref_state, new_state = model.module.state_dict(), mapped.module.state_dict()
    changed_tables = 0
    for k, t in ref_state.items():
        new = new_state[k]
        if new.shape == t.shape:
            assert np.array_equal(new.numpy(), t.numpy()), k
        else:
            assert np.array_equal(new[: t.shape[0]].numpy(), t.numpy()), k
            changed_tables += not np.allclose(new[t.shape[0]:].numpy(), t.mean(0).numpy())
    assert changed_tables > 0  # training moved the new rows away from their initial value
    rec = query.uns["map_query"]
    assert list(rec["new_batches"]) == [QUERY]
    assert rec["genes"]["n_missing"] == 0 and not rec["genes"]["reordered"]
    assert len(rec["history"]["train_loss"]) > 0
    assert query.obsm["X_vae"].shape == (query.n_obs, 10)


def test_transfer_labels_accuracy_and_mixing(cb_mapping, cellbench_3protocols):
    ref, query, *_ = cb_mapping
    q = query.copy()
    sa.tl.transfer_labels(q, reference=ref, label_key="cell_type")
    acc = (q.obs["cell_type_transferred"].astype(str) == q.obs["cell_type"].astype(str)).mean()
    assert acc >= 0.95
    unc = q.obs["cell_type_transferred_uncertainty"].to_numpy()
    assert unc.shape == (q.n_obs,) and (unc >= 0).all() and (unc < 1 - 1 / 3 + 1e-6).all()
    proba = q.obsm["cell_type_transferred_probabilities"]
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert "cell_type" in q.obs  # the query's own labels are not overwritten
    # mapped cells mix with the reference far better than in the uncorrected PCA
    z = np.vstack([ref.obsm["X_vae"], q.obsm["X_vae"]])
    side = np.r_[np.zeros(ref.n_obs), np.ones(q.n_obs)]
    joint = cellbench_3protocols.copy()
    joint.obs["side"] = np.where(joint.obs["batch"] == QUERY, "query", "reference")
    uncorrected = _lognorm_pca_entropy(joint, "side")
    assert sa.metrics.batch_entropy(z, side) > uncorrected + 0.2


def test_uncertainty_flags_cell_types_missing_from_reference(cb_mapping):
    ref, query, *_ = cb_mapping
    partial = ref[ref.obs["cell_type"] != "H1975"].copy()
    q = sa.tl.transfer_labels(query, reference=partial, label_key="cell_type", copy=True)
    unc = q.obs["cell_type_transferred_uncertainty"].to_numpy()
    unseen = (q.obs["cell_type"] == "H1975").to_numpy()
    assert unc[unseen].mean() > unc[~unseen].mean()


def test_mapped_model_saves_and_loads(cb_mapping, tmp_path):
    _, query, _, _, _, mapped = cb_mapping
    path = mapped.save(tmp_path / "mapped.npz")
    loaded = sa.VAE.load(path)
    assert loaded.batch_categories == mapped.batch_categories
    assert_same_latent(loaded.get_latent(query), query.obsm["X_vae"])


def test_gene_batch_dispersion_and_reordered_padded_genes(sim3):
    ref = sim3[sim3.obs["batch"] != "batch2"].copy()
    query = sim3[sim3.obs["batch"] == "batch2"].copy()
    model = sa.tl.vae(ref, batch_key="batch", dispersion="gene-batch", n_latent=4, n_hidden=32, max_epochs=3, **FAST)
    before = model.get_latent(ref)
    disp = model.module.log_dispersion.detach().clone()
    dropped = list(query.var_names[:5])
    q = query[:, query.var_names[5:][::-1]].copy()  # 5 genes missing, the rest reversed
    snap = Snapshot(q)
    with pytest.raises(sa.InputError, match="pad_missing=True"):
        model.map_query(q, batch_key="batch", max_epochs=3, **FAST)
    snap.assert_unchanged(q)
    with pytest.warns(UserWarning, match="5 of the model's genes are missing"):
        mapped = model.map_query(q, batch_key="batch", pad_missing=True, max_epochs=3, **FAST)
    genes = q.uns["map_query"]["genes"]
    assert genes["n_missing"] == 5 and sorted(genes["missing"]) == sorted(dropped) and genes["reordered"]
    assert np.array_equal(mapped.get_latent(ref), before)
    assert np.array_equal(mapped.module.log_dispersion[:2].detach().numpy(), disp.numpy())
    assert mapped.module.log_dispersion.shape[0] == 3


def test_query_of_known_batches_only_trains_nothing(sim3):
    ref = sim3[sim3.obs["batch"] != "batch2"].copy()
    model = sa.tl.vae(ref, batch_key="batch", n_latent=4, n_hidden=32, max_epochs=2, **FAST)
    q = ref[:50].copy()
    with pytest.warns(UserWarning, match="nothing to train"):
        mapped = model.map_query(q, batch_key="batch", **FAST)
    assert np.array_equal(q.obsm["X_vae"], model.get_latent(q))
    assert mapped.batch_categories == model.batch_categories
    hist = q.uns["map_query"]["history"]  # the fields of every history, with no epochs
    assert set(hist) == {f.name for f in dataclasses.fields(History)} - {"terms", "info"}
    assert len(hist["train_loss"]) == 0 and hist["best_epoch"] == -1 and not hist["interrupted"]


@pytest.mark.parametrize("case, exc, match", [
    ("no_batch_model", sa.InputError, "trained with batch_key=None"),
    ("missing_key", sa.InputError, "is not a column of the query's obs"),
    ("tiny_batch", sa.InputError, "new batches with fewer than 3 cells"),
    ("weight_decay", ValueError, "weight_decay=0"),
    ("unknown_kwarg", TypeError, "max_epoch"),
])
def test_map_query_errors_leave_query_unchanged(sim3, case, exc, match):
    ref = sim3[sim3.obs["batch"] != "batch2"].copy()
    query = sim3[sim3.obs["batch"] == "batch2"].copy()
    model = sa.tl.vae(ref, batch_key=None if case == "no_batch_model" else "batch", n_latent=3, n_hidden=16,
                      max_epochs=1, **FAST)
    kwargs = dict(batch_key="batch", max_epochs=1, **FAST)
    if case == "missing_key":
        kwargs["batch_key"] = "protocol"
    elif case == "tiny_batch":
        query = sim3[(sim3.obs["batch"] == "batch2").to_numpy().nonzero()[0][:2]].copy()
    elif case == "weight_decay":
        kwargs["weight_decay"] = 1e-6
    elif case == "unknown_kwarg":
        kwargs["max_epoch"] = kwargs.pop("max_epochs")
    snap = Snapshot(query)
    with pytest.raises(exc, match=match):
        model.map_query(query, **kwargs)
    snap.assert_unchanged(query)


@pytest.mark.parametrize("case, match", [
    ("no_basis", "has no 'X_vae'"),
    ("no_label", "label_key='celltype' is not a column of reference.obs"),
    ("dims", "dimensions"),
])
def test_transfer_labels_errors_leave_adata_unchanged(cb_mapping, case, match):
    ref, query, *_ = cb_mapping
    q, r = query.copy(), ref
    label = "cell_type"
    if case == "no_basis":
        del q.obsm["X_vae"]
    elif case == "no_label":
        label = "celltype"
    else:
        q.obsm["X_vae"] = q.obsm["X_vae"][:, :3]
    snap = Snapshot(q)
    with pytest.raises(sa.InputError, match=match):
        sa.tl.transfer_labels(q, reference=r, label_key=label)
    snap.assert_unchanged(q)


# ---------------------------------------------------------------- batch removal by arithmetic

def test_remove_batch_label_free_and_label_aware(cellbench_3protocols):
    adata = cellbench_3protocols.copy()
    model = sa.tl.vae(adata, batch_key=None, n_latent=10, max_epochs=20, seed=0, **FAST)
    batch, label = adata.obs["batch"].astype(str), adata.obs["cell_type"].astype(str)
    z = adata.obsm["X_vae"]
    sa.tl.remove_batch(model, adata, batch_key="batch", key_added="X_free")
    sa.tl.remove_batch(model, adata, batch_key="batch", cell_type_key="cell_type", key_added="X_aware")
    before = sa.metrics.batch_entropy(z, batch)
    for key in ("X_free", "X_aware"):
        corrected = adata.obsm[key]
        assert corrected.shape == z.shape and np.isfinite(corrected).all()
        assert sa.metrics.batch_entropy(corrected, batch) > before + 0.1
        # cell lines stay separable: kNN label purity of the corrected space
        assert sa.metrics.label_silhouette(corrected, label) > 0.5
    largest = batch.value_counts().index[0]
    rows = (batch == largest).to_numpy()
    assert_same_latent(adata.obsm["X_free"][rows], z[rows].astype(np.float32))  # the anchor batch stays
    assert list(adata.uns["X_free"]["merge_order"])[0] == largest


# ---------------------------------------------------------------- prediction (scGen) on Kang

HOLD = "CD14_mono"


@pytest.fixture(scope="session")
def kang_labelled():
    """Kang with the annotation (sa.pp.annotate_markers per condition), 500 HVGs, log data in X and
    counts in layers["counts"]. Do not modify."""
    adata = load_shared("kang_ifnb_pbmc_subset")
    sa.pp.annotate_markers(adata, groupby="batch")
    sa.pp.highly_variable(adata, n_top_genes=500, batch_key="batch")
    sa.pp.drop_empty(adata)
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


@pytest.fixture(scope="session")
def kang_prediction(kang_labelled):
    """(zinb model trained without the stimulated CD14_mono cells, its prediction of them)."""
    a = kang_labelled
    hold = ((a.obs["cell_type"] == HOLD) & (a.obs["batch"] == "stim")).to_numpy()
    model = sa.tl.vae(a[~hold].copy(), batch_key=None, layer="counts", n_latent=10, max_epochs=40, seed=0, **FAST)
    pred = sa.tl.predict(model, a, condition_key="batch", ctrl="ctrl", stim="stim", cell_type_key="cell_type",
                         predict=HOLD)
    return model, pred


def _top_de(adata, cell_type, n=100):
    """Top ``n`` genes of stim vs ctrl (wilcoxon on the real log data) within one cell type."""
    sub = adata[(adata.obs["cell_type"] == cell_type).to_numpy()].copy()
    sc.tl.rank_genes_groups(sub, "batch", groups=["stim"], reference="ctrl", method="wilcoxon")
    return list(sub.uns["rank_genes_groups"]["names"]["stim"][:n])


def _other_types_shift(adata, pred, scale, X):
    """Baseline: control means + the mean stim-ctrl shift of the other cell types."""
    shifts = []
    for other in pred.uns["predict"]["cell_types_used"]:
        rows = (adata.obs["cell_type"] == other).to_numpy()
        m = [sa.tl.mean_expression(X[rows & (adata.obs["batch"] == c).to_numpy()], scale) for c in ("ctrl", "stim")]
        shifts.append(m[1] - m[0])
    return np.mean(shifts, 0)


def test_predict_record_and_shape(kang_labelled, kang_prediction):
    a = kang_labelled
    model, pred = kang_prediction
    n_ctrl = int(((a.obs["cell_type"] == HOLD) & (a.obs["batch"] == "ctrl")).sum())
    assert pred.shape == (n_ctrl, a.n_vars) and list(pred.var_names) == list(a.var_names)
    assert (pred.obs["batch"] == "pred").all() and (pred.obs["cell_type"] == HOLD).all()
    rec = pred.uns["predict"]
    assert rec["scale"] == "counts" and rec["delta"].shape == (10,)
    assert HOLD not in set(rec["cell_types_used"]) and len(rec["cell_types_used"]) >= 3
    X = np.asarray(pred.X)
    assert np.isfinite(X).all() and (X >= 0).all()
    # decoded expected counts keep each control cell's library size (the decoder's softmax x library)
    lib = np.asarray(a.layers["counts"][(a.obs["cell_type"] == HOLD).to_numpy() & (a.obs["batch"] == "ctrl").to_numpy()]
                     .sum(1)).ravel()
    assert np.corrcoef(X.sum(1), lib)[0, 1] > 0.9
    # the shifted latents are the control latents + delta
    ctrl = a[(a.obs["cell_type"] == HOLD).to_numpy() & (a.obs["batch"] == "ctrl").to_numpy()]
    np.testing.assert_allclose(pred.obsm["X_vae"], model.get_latent(ctrl) + rec["delta"], rtol=1e-5, atol=1e-5)


def test_predict_beats_both_baselines_on_de_genes(kang_labelled, kang_prediction):
    a = kang_labelled
    _, pred = kang_prediction
    means = sa.tl.response_means(a, pred, cell_type=HOLD, cell_type_key="cell_type")
    top = np.isin(np.asarray(pred.var_names), _top_de(a, HOLD))
    shifted = means["ctrl"] + _other_types_shift(a, pred, "counts", a.layers["counts"])
    real = means["stim"]
    r2 = {name: (sa.tl.r_squared(real, y), sa.tl.r_squared(real[top], y[top]))
          for name, y in (("pred", means["pred"]), ("no change", means["ctrl"]), ("shift", shifted))}
    assert r2["pred"][0] > r2["no change"][0] and r2["pred"][1] > r2["no change"][1] + 0.2, r2
    assert r2["pred"][1] > r2["shift"][1], r2


def test_predict_gaussian_on_log_data(kang_labelled):
    a = kang_labelled
    hold = ((a.obs["cell_type"] == HOLD) & (a.obs["batch"] == "stim")).to_numpy()
    model = sa.tl.vae(a[~hold].copy(), batch_key=None, likelihood="gaussian", n_latent=10, max_epochs=15, seed=0,
                      **FAST)
    pred = sa.tl.predict(model, a, condition_key="batch", ctrl="ctrl", stim="stim", cell_type_key="cell_type",
                         predict=HOLD)
    assert pred.uns["predict"]["scale"] == "log"
    means = sa.tl.response_means(a, pred, cell_type=HOLD, cell_type_key="cell_type")
    top = np.isin(np.asarray(pred.var_names), _top_de(a, HOLD))
    assert sa.tl.r_squared(means["stim"][top], means["pred"][top]) > sa.tl.r_squared(means["stim"][top],
                                                                                     means["ctrl"][top]) + 0.2


def test_pl_response_draws_both_r2(kang_labelled, kang_prediction):
    _, pred = kang_prediction
    top = _top_de(kang_labelled, HOLD, 20)
    fig = sa.pl.response(kang_labelled, pred, condition_key="batch", cell_type=HOLD, genes=top, return_fig=True)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("all genes: R² = ") and labels[1].startswith("20 selected genes: R² = ")
    with pytest.raises(sa.InputError, match="condition_key='condition'"):
        sa.pl.response(kang_labelled, pred, condition_key="condition")


@pytest.mark.parametrize("case, match", [
    ("condition_is_batch", "the condition itself"),
    ("no_condition", "condition_key='stimulus' is not a column"),
    ("bad_ctrl", "ctrl='control' is not a value"),
    ("unknown_type", "predict='Tcells' must name a cell type"),
    ("only_type", "No cell type other than"),
])
def test_predict_errors_leave_adata_unchanged(sim3, case, match):
    adata = sim3.copy()
    adata.obs["condition"] = np.where(np.arange(adata.n_obs) % 2, "stim", "ctrl")
    model = sa.tl.vae(adata, batch_key="condition" if case == "condition_is_batch" else None, n_latent=3,
                      n_hidden=16, max_epochs=1, **FAST)
    kwargs = dict(condition_key="condition", ctrl="ctrl", stim="stim", cell_type_key="cell_type", predict="group0")
    if case == "no_condition":
        kwargs["condition_key"] = "stimulus"
    elif case == "bad_ctrl":
        kwargs["ctrl"] = "control"
    elif case == "unknown_type":
        kwargs["predict"] = "Tcells"
    elif case == "only_type":
        adata.obs["cell_type"] = "group0"
    snap = Snapshot(adata)
    with pytest.raises(sa.InputError, match=match):
        sa.tl.predict(model, adata, **kwargs)
    snap.assert_unchanged(adata)
