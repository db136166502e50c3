"""tl.nmf / models.NMF / pl.loadings / ``scgen-ae integrate --model nmf`` on the shared real data."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import scgen_ae as sa
from scgen_ae.cli import main
from scgen_ae.models import _nmf_data, _nmf_solver
from scgen_ae.train import History

from .conftest import Snapshot, fit_copy

K = 10  # the default and the k
NMF_KW = dict(n_components=K, n_threads=1, seed=0)


def frobenius(X, W, H) -> float:
    """1/2 ||X - W H||^2 by brute force on the dense matrix (test data is small)."""
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    return 0.5 * float(np.square(X - W.astype(np.float64) @ H.astype(np.float64)).sum())


def lognorm(adata):
    X = sa.models.nmf.preprocess(sp.csr_matrix(adata.X), "log1p", 1e4)
    return X


@pytest.fixture(scope="session")
def plain(cellbench_hvg):
    """(annotated copy, model) of plain NMF on cellbench_3cl's 1,000 HVGs."""
    return fit_copy(sa.tl.nmf, cellbench_hvg, **NMF_KW)


@pytest.fixture(scope="session")
def integrated(cellbench_hvg):
    """The same with batch_key: iNMF + quantile alignment."""
    return fit_copy(sa.tl.nmf, cellbench_hvg, batch_key="batch", **NMF_KW)


# ---------------------------------------------------------------- what is written

def test_plain_nmf_writes_documented_keys(plain, cellbench_hvg):
    adata, model = plain
    Z, L = adata.obsm["X_nmf"], adata.varm["nmf_loadings"]
    assert Z.shape == (adata.n_obs, K) and L.shape == (adata.n_vars, K)
    assert (Z >= 0).all() and (L >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(L, axis=0), 1.0, rtol=1e-5)
    u = adata.uns["nmf"]
    assert u["key_added"] == "X_nmf" and u["varm_key"] == "nmf_loadings"
    assert u["params"]["n_components"] == K and u["params"]["batch_key"] == "None"
    hist = u["history"]
    assert len(hist["train_loss"]) == hist["n_iter"] == len(hist["pass_seconds"])
    assert hist["seconds"] == hist["pass_seconds"][-1] and hist["stopped_early"] == hist["converged"]
    assert hist["sketch_at"] == _nmf_solver.SKETCH_AFTER and len(hist["sketch_loss"]) > 1
    assert "X_nmf" not in cellbench_hvg.obsm  # copy=True left the input alone


def test_history_is_the_record_of_a_train_history(plain):
    """uns["nmf"]["history"] is a History.as_dict(): restored into a History it gives itself back."""
    hist = plain[0].uns["nmf"]["history"]
    again = History()
    again.restore(hist)
    assert set(again.as_dict()) == set(hist)
    for key, value in again.as_dict().items():
        np.testing.assert_array_equal(value, hist[key], err_msg=key)
    assert hist["best_epoch"] == len(hist["train_loss"]) - 1 and not hist["interrupted"]


def test_history_is_the_reconstruction_error(plain, cellbench_hvg):
    """The last loss in uns is 1/2 ||X - W H||^2 per cell of the stored factors."""
    adata, _ = plain
    X = lognorm(cellbench_hvg)
    direct = frobenius(X, adata.obsm["X_nmf"], adata.varm["nmf_loadings"].T) / adata.n_obs
    assert adata.uns["nmf"]["history"]["train_loss"][-1] == pytest.approx(direct, rel=1e-4)


def test_loss_decreases(plain):
    loss = plain[0].uns["nmf"]["history"]["train_loss"]
    assert loss[-1] < 0.8 * loss[0]
    assert loss[-1] <= loss.min() * (1 + 1e-3)


@pytest.mark.parametrize("chunk_size", [None, 128])
def test_statistics_stay_exact_over_a_long_fit(cellbench_hvg, chunk_size, monkeypatch):
    """200 passes without stopping (full batch and online): after every pass the kept
    W^T X equals the exact one row by row, and the recorded objective is the true loss.
    Kept by float32 increments, the rows of components whose factors shrank drifted
    (relative error 3e-3 after one pass on cellbench_3cl's 2,000 HVGs) and the fit
    diverged to -1e50 after ~130 passes there (BENCHMARKS.md)."""
    X = lognorm(cellbench_hvg)
    dense = torch.from_numpy(X.toarray()).double()
    worst = []
    balance = _nmf_solver._balance

    def checked(Ws, H, V, A, B, prev):
        scale = balance(Ws, H, V, A, B, prev)
        exact = Ws[0].double().T @ dense
        size = exact.abs().amax(1)
        live = size > 0
        worst.append(float(((B[0] - exact).abs().amax(1)[live] / size[live]).max()))
        return scale

    monkeypatch.setattr(_nmf_solver, "_balance", checked)
    # without the sketch phase: its passes keep the statistics of the sketch, not of X
    fit = _nmf_solver.fit([X], K, chunk_size=chunk_size, tol=0.0, max_iter=200, seed=0, sketch=False)
    assert len(worst) == 200 and max(worst) < 1e-5
    assert np.isfinite(fit.loss).all()
    direct = frobenius(X, fit.W[0].numpy(), fit.H.numpy()) / X.shape[0]
    assert fit.loss[-1] == pytest.approx(direct, rel=1e-6)
    assert fit.loss[-1] <= min(fit.loss) * (1 + 1e-5)


@pytest.mark.parametrize("loss, transform", [("frobenius", "log1p"), ("kl", "none")])
def test_multiplicative_updates_never_increase_the_loss(cellbench_hvg, loss, transform):
    model = sa.tl.nmf(cellbench_hvg.copy(), loss=loss, solver="mu", transform=transform, max_iter=15, tol=0,
                      **NMF_KW)
    hist = np.asarray(model.history["train_loss"])
    assert len(hist) == 15 and np.isfinite(hist).all()
    assert (np.diff(hist) <= 1e-6 * np.abs(hist[:-1])).all()


def test_same_seed_reproduces_and_random_init_depends_on_it(cellbench_hvg):
    a, b, c = (cellbench_hvg.copy() for _ in range(3))
    for adata, seed in ((a, 1), (b, 1), (c, 2)):
        sa.tl.nmf(adata, init="random", max_iter=20, n_components=K, n_threads=1, seed=seed)
    np.testing.assert_array_equal(a.obsm["X_nmf"], b.obsm["X_nmf"])
    assert not np.allclose(a.obsm["X_nmf"], c.obsm["X_nmf"])


def test_progress_bar_drawn_only_when_asked_and_changes_nothing(plain, cellbench_hvg, capsys):
    """``plain`` fitted with the bar (progress=True is the default); progress=False draws
    nothing and gives the same numbers, bit for bit."""
    capsys.readouterr()
    adata, _ = fit_copy(sa.tl.nmf, cellbench_hvg, progress=False, **NMF_KW)
    assert "NMF" not in capsys.readouterr().err
    assert adata.uns["nmf"]["params"]["progress"] is False
    np.testing.assert_array_equal(adata.obsm["X_nmf"], plain[0].obsm["X_nmf"])
    np.testing.assert_array_equal(adata.varm["nmf_loadings"], plain[0].varm["nmf_loadings"])
    for key in ("train_loss", "sketch_loss"):
        np.testing.assert_array_equal(adata.uns["nmf"]["history"][key], plain[0].uns["nmf"]["history"][key])
    fit_copy(sa.tl.nmf, cellbench_hvg, batch_key="batch", progress=True, max_iter=3, **NMF_KW)
    assert "NMF:" in capsys.readouterr().err


def test_transform_solves_cells_at_least_as_well(plain, cellbench_hvg):
    """With the loadings fixed, transform's cell factors are the NNLS optimum: no worse than training's."""
    adata, model = plain
    X, H = lognorm(cellbench_hvg), adata.varm["nmf_loadings"].T
    W = model.transform(cellbench_hvg)
    assert W.shape == (adata.n_obs, K) and (W >= 0).all()
    assert frobenius(X, W, H) <= frobenius(X, adata.obsm["X_nmf"], H) * (1 + 1e-5)


def test_dense_chunks_give_the_sparse_products(cellbench_hvg, monkeypatch):
    """A dense-enough CPU chunk is multiplied as a dense matrix: same X D and X^T D as the sparse
    kernels, without building X^T; a sparse one (or one over DENSE_BYTES) keeps only the sparse form."""
    X = lognorm(cellbench_hvg)
    assert X.nnz >= _nmf_data.DENSE_FROM * X.shape[0] * X.shape[1]  # CellBench is deep
    as_dense = _nmf_data.Chunk.of(X, 0, 0, X.shape[0], torch.device("cpu"))
    monkeypatch.setattr(_nmf_data, "DENSE_BYTES", 0)
    as_sparse = _nmf_data.Chunk.of(X, 0, 0, X.shape[0], torch.device("cpu"))
    assert as_dense.dense is not None and as_sparse.dense is None
    gen = torch.Generator().manual_seed(0)
    H, W = torch.rand(X.shape[1], 7, generator=gen), torch.rand(X.shape[0], 7, generator=gen)
    torch.testing.assert_close(as_dense.mm(H), as_sparse.mm(H), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(as_dense.tmm(W), as_sparse.tmm(W), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(as_dense.mm(H), torch.from_numpy(X @ H.numpy()), rtol=1e-5, atol=1e-4)
    assert as_dense._XT is None  # X^T is built on first use, and the dense products never use it
    torch.testing.assert_close(as_dense.XT.to_dense(), torch.from_numpy(X.T.toarray()))


def test_chunks_are_views_of_the_input_rows_and_leave_it_unchanged(cellbench_hvg):
    X = lognorm(cellbench_hvg)
    chunk = _nmf_data.Chunk.of(X, 0, 10, 60, torch.device("cpu"))  # small slice: scipy would copy it
    assert np.shares_memory(chunk.X.values().numpy(), X.data)
    torch.testing.assert_close(chunk.X.to_dense(), torch.from_numpy(X[10:60].toarray()))
    before = X.copy()
    _nmf_solver.fit([X[:200], X[200:]], K, chunk_size=64, max_iter=5, integrative=True, lam=2.0, seed=0)
    _nmf_solver.fit([X], K, chunk_size=64, max_iter=5, loss="kl", seed=0)
    assert (X != before).nnz == 0


def test_unsorted_input_is_factorised_as_it_is(cellbench_hvg, monkeypatch):
    """tl.nmf takes CSR with unsorted column indices (a column subset of a matrix gives them)
    without sorting it into a copy (~150 MB at 10^5 cells): the input's own arrays reach the
    solver, and the fit is that of the sorted matrix."""
    X = lognorm(cellbench_hvg)
    rng = np.random.default_rng(0)
    shuffled = X.copy()  # the same matrix, each row's entries in a random order
    for r in range(X.shape[0]):
        lo, hi = X.indptr[r], X.indptr[r + 1]
        order = lo + rng.permutation(hi - lo)
        shuffled.indices[lo:hi], shuffled.data[lo:hi] = X.indices[order], X.data[order]
    shuffled.has_sorted_indices = False
    assert (shuffled != X).nnz == 0
    seen = []
    fit = _nmf_solver.fit
    monkeypatch.setattr(_nmf_solver, "fit", lambda blocks, *a, **kw: seen.append(blocks) or fit(blocks, *a, **kw))
    kw = dict(transform="none", tol=0.0, max_iter=30, **NMF_KW)
    adata = ad.AnnData(shuffled, obs=cellbench_hvg.obs[[]].copy(), var=cellbench_hvg.var[[]].copy())
    unsorted = sa.tl.nmf(adata, **kw)
    assert np.shares_memory(seen[0][0].indices, shuffled.indices) and not shuffled.has_sorted_indices
    reference = sa.tl.nmf(ad.AnnData(X, obs=adata.obs.copy(), var=adata.var.copy()), **kw)
    np.testing.assert_allclose(unsorted.history["train_loss"], reference.history["train_loss"], rtol=1e-5)


def test_online_pass_needs_one_transposed_product_per_chunk(cellbench_hvg, monkeypatch):
    """Online, each chunk's last W_c^T X_c is kept: swapping it for the new one in the running
    statistics costs one sparse X^T product per chunk instead of two, for the same fit as
    recomputing the old one (what happens when the kept statistics would exceed KEPT_BYTES)."""
    X = lognorm(cellbench_hvg)
    calls = []
    tmm = _nmf_data.Chunk.tmm
    monkeypatch.setattr(_nmf_data.Chunk, "tmm", lambda self, D: calls.append(1) or tmm(self, D))
    passes, chunk = 30, 128
    kept = _nmf_solver.fit([X], K, chunk_size=chunk, tol=0.0, max_iter=passes, seed=0)
    with_kept = len(calls)
    monkeypatch.setattr(_nmf_solver, "KEPT_BYTES", 0)
    calls.clear()
    recomputed = _nmf_solver.fit([X], K, chunk_size=chunk, tol=0.0, max_iter=passes, seed=0)
    assert len(calls) - with_kept == passes * -(-X.shape[0] // chunk)  # one product less per chunk and pass
    np.testing.assert_allclose(kept.loss, recomputed.loss, rtol=1e-5)


def test_start_svd_is_near_exact_in_memory_and_cheap_when_chunked(cellbench_hvg, monkeypatch):
    """Whole-block fits start from a randomized SVD with POWER_ITERS_WHOLE power iterations,
    whose singular values match the exact SVD's; chunked fits use POWER_ITERS_CHUNKED."""
    X = lognorm(cellbench_hvg)
    used = []
    svd = _nmf_solver.randomized_svd
    monkeypatch.setattr(_nmf_solver, "randomized_svd",
                        lambda *a, n_iter, **kw: used.append(n_iter) or svd(*a, n_iter=n_iter, **kw))
    _nmf_solver.fit([X], K, max_iter=1, seed=0)
    _nmf_solver.fit([X], K, chunk_size=128, max_iter=1, seed=0)
    assert used == [_nmf_solver.POWER_ITERS_WHOLE, _nmf_solver.POWER_ITERS_CHUNKED] and used[0] > used[1]
    exact = np.linalg.svd(X.toarray().astype(np.float64), compute_uv=False)[:K]
    chunks = _nmf_data.make_chunks([X], None, "cpu")
    for n_iter, rtol in ((_nmf_solver.POWER_ITERS_WHOLE, 1e-3), (0, None)):
        _, S, _ = svd(chunks, X.shape, K, torch.Generator().manual_seed(0), "cpu", n_iter=n_iter)
        error = np.abs(S[:K].numpy() / exact - 1).max()
        if rtol is not None:
            assert error < rtol
        else:  # without power iterations the trailing values are visibly off: the check can fail
            assert error > 1e-3


def test_sketch_multiplies_as_the_projected_data(cellbench_hvg):
    """The sketch's chunks multiply as the dense (U S) Vt, which is X's projection on the
    span of Vt's rows (||X||^2 = ||sketch||^2 + ||X - sketch||^2, which its objective
    assumes); they carry X's squared norm. Two blocks, so the rows are cut as the chunks'."""
    X = lognorm(cellbench_hvg)
    chunks = _nmf_data.make_chunks([X[:200], X[200:]], None, "cpu")
    U, S, Vt = _nmf_solver.randomized_svd(chunks, X.shape, K, torch.Generator().manual_seed(0), "cpu", n_iter=2)
    assert U.shape == (X.shape[0], K + 10) and Vt.shape == (K + 10, X.shape[1])
    sketch = (U * S @ Vt).double()
    gen = torch.Generator().manual_seed(1)
    D, E = torch.rand(X.shape[1], K, generator=gen), torch.rand(X.shape[0], K, generator=gen)
    pos = 0
    for c in _nmf_data.sketch_chunks(chunks, U, S, Vt):
        rows = slice(pos, pos + c.stop - c.start)
        pos = rows.stop
        np.testing.assert_allclose(c.mm(D).double(), sketch[rows] @ D.double(), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(c.tmm(E[rows]).double(), sketch[rows].T @ E[rows].double(), rtol=1e-4, atol=1e-3)
        assert c.sq_norm == chunks[c.block].sq_norm
    dense = torch.from_numpy(X.toarray()).double()
    total = float(dense.square().sum())
    assert float(sketch.square().sum()) + float((dense - sketch).square().sum()) == pytest.approx(total, rel=1e-5)


def test_sketch_phase_gives_a_lower_loss_in_fewer_passes(cellbench_hvg):
    """Plain whole-block Frobenius HALS fits from NNDSVD pass over the sketch after SKETCH_AFTER
    passes over X; at the default tol they end lower, after fewer passes over X. Its
    recorded objective estimates the true one. Other fits do not use it."""
    X = lognorm(cellbench_hvg)
    fit = _nmf_solver.fit([X], K, seed=0)
    without = _nmf_solver.fit([X], K, seed=0, sketch=False)
    assert fit.sketch_at == _nmf_solver.SKETCH_AFTER and len(fit.sketch_loss) > 1
    assert fit.loss[-1] < without.loss[-1] and len(fit.loss) < len(without.loss)
    assert fit.sketch_loss[-1] == pytest.approx(fit.loss[fit.sketch_at], rel=1e-2)
    direct = frobenius(X, fit.W[0].numpy(), fit.H.numpy()) / X.shape[0]
    assert fit.loss[-1] == pytest.approx(direct, rel=1e-5)  # ends on X, not on the sketch
    for kw in (dict(chunk_size=128), dict(init="random"), dict(solver="mu"), dict(loss="kl", solver="mu"),
               dict(integrative=True, lam=5.0), dict(sketch=False)):
        other = _nmf_solver.fit([X], K, seed=0, max_iter=5, **kw)
        assert other.sketch_loss == [] and other.sketch_at == 0, kw


def test_online_updates_reach_the_full_batch_loss(plain, cellbench_hvg):
    model = sa.tl.nmf(cellbench_hvg.copy(), batch_size=128, **NMF_KW)
    assert model.history["train_loss"][-1] <= plain[1].history["train_loss"][-1] * 1.01


def test_save_load_roundtrip(integrated, cellbench_hvg, tmp_path):
    adata, model = integrated
    path = model.save(tmp_path / "nmf.npz")
    loaded = sa.NMF.load(path, adata=cellbench_hvg)
    np.testing.assert_array_equal(loaded.loadings, model.loadings)
    np.testing.assert_allclose(loaded.transform(cellbench_hvg), model.transform(cellbench_hvg), rtol=1e-5, atol=1e-6)


def test_min_match_one_leaves_every_cluster_unmapped(integrated, cellbench_hvg):
    """min_match is passed to the alignment: at 1.0 no (batch, cluster) signature matches the
    reference's, so nothing is mapped; the fit is the same, so the reference batch's cells
    keep the factors of the default run, and the other batches' differ."""
    adata, model = fit_copy(sa.tl.nmf, cellbench_hvg, batch_key="batch", min_match=1.0, **NMF_KW)
    default_adata, default_model = integrated
    assert adata.uns["nmf"]["params"]["min_match"] == 1.0
    assert model.config.min_match == 1.0 and model.alignment_tables()["valid"].sum() == 0
    assert default_model.alignment_tables()["valid"].sum() > 0
    ref = (adata.obs["batch"] == adata.uns["nmf"]["reference_batch"]).to_numpy()
    np.testing.assert_allclose(adata.obsm["X_nmf"][ref], default_adata.obsm["X_nmf"][ref], rtol=1e-6)
    assert not np.allclose(adata.obsm["X_nmf"][~ref], default_adata.obsm["X_nmf"][~ref], rtol=1e-3)


def test_model_file_without_reference_batch_keeps_its_units(integrated, cellbench_hvg, tmp_path):
    """Files written before ``reference_batch`` was kept load, and align in their old units
    (unit root-mean-square): the current ones divided by the reference batch's scales."""
    from scgen_ae.io import read_model_file, write_model_file

    adata, model = integrated
    header, arrays = read_model_file(model.save(tmp_path / "new.npz"))
    for field in ("reference_batch", "min_match"):
        del header["config"][field]
    old = sa.NMF.load(write_model_file(tmp_path / "old.npz", header, arrays))
    assert old.config.reference_batch is None
    ref = model.batch_categories.index(adata.uns["nmf"]["reference_batch"])
    np.testing.assert_allclose(old.transform(cellbench_hvg) * model.alignment_tables()["scales"][ref],
                               model.transform(cellbench_hvg), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- integration

def test_inmf_mixes_batches_and_keeps_cell_lines(plain, integrated):
    """iNMF + alignment mixes the two protocols clearly better than plain NMF; cell lines stay apart."""
    (a_plain, _), (a_int, model) = plain, integrated
    ent_plain = sa.metrics.batch_entropy(a_plain.obsm["X_nmf"], a_plain.obs["batch"])
    ent_int = sa.metrics.batch_entropy(a_int.obsm["X_nmf"], a_int.obs["batch"])
    assert ent_int > ent_plain + 0.15
    assert sa.metrics.clustering_ari(a_int.obsm["X_nmf"], a_int.obs["cell_type"]) >= 0.9
    assert (a_int.obsm["X_nmf"] >= 0).all()
    # new cells go through the same alignment: applying the model to its training cells agrees
    Z = model.transform(a_int)
    assert np.corrcoef(Z.ravel(), a_int.obsm["X_nmf"].ravel())[0, 1] > 0.95
    assert a_int.uns["nmf"]["reference_batch"] == a_int.obs["batch"].value_counts().idxmax()


@pytest.mark.parametrize("same_population", [True, False])
def test_alignment_maps_clusters_of_one_population_only(same_population):
    """Three populations per batch, each the cluster of its largest factor; batch 1 has twice
    the scale. Its cluster 0 is mapped onto the reference's cluster 0 only when it is the
    same population (factor profile (3, 2.7, 0)); a population that shares only its largest
    factor ((3, 0, 2.7)) is left in place, rescaled. Reference cells keep their factors."""
    from scgen_ae.models.nmf import NMFConfig, apply_alignment, fit_alignment

    rng = np.random.default_rng(0)
    loadings = np.kron(np.eye(3), np.full((1, 10), 10 ** -0.5))  # factor j: genes 10j..10j+9

    def cells(profile, n, scale):
        return np.abs(np.asarray(profile) * scale * (1 + 0.1 * rng.standard_normal((n, 3))))

    first = (3, 2.7, 0) if same_population else (3, 0, 2.7)
    Z = np.vstack([cells((3, 2.7, 0), 80, 1.0), cells((0, 3, 0.5), 60, 1.0), cells((0.5, 0, 3), 60, 1.0),
                   cells(first, 80, 2.0), cells((0, 3, 0.5), 60, 2.0), cells((0.5, 0, 3), 60, 2.0)]).astype(np.float32)
    codes = np.repeat([0, 1], 200)
    config = NMFConfig(n_genes=30, n_components=3, n_batches=2, aligned=True, reference_batch=0)
    tables = fit_alignment(Z, codes, loadings, config)
    np.testing.assert_array_equal(tables["valid"], [[0, 0, 0], [float(same_population), 1, 1]])
    out = apply_alignment(Z, codes, tables, reference_batch=0)
    np.testing.assert_allclose(out[:200], Z[:200], rtol=1e-6)
    first_cluster = out[200:280]
    if same_population:  # mapped: its quantiles are the reference cluster's
        np.testing.assert_allclose(np.median(first_cluster, 0), np.median(Z[:80], 0), rtol=0.05, atol=0.02)
    else:  # only rescaled into the reference's units: the population keeps its own profile
        np.testing.assert_allclose(first_cluster, Z[200:280] / tables["scales"][1] * tables["scales"][0], rtol=1e-5)


def test_config_needs_two_quantiles_like_the_front():
    from scgen_ae.models.nmf import NMFConfig

    with pytest.raises(ValueError, match="n_quantiles must be >= 2"):
        NMFConfig(n_genes=30, n_components=3, n_batches=2, aligned=True, n_quantiles=1)
    assert NMFConfig(n_genes=30, n_components=3, n_quantiles=2).n_quantiles == 2


# ---------------------------------------------------------------- errors leave adata unchanged

def _refused(adata, match, **kwargs):
    snap = Snapshot(adata)
    with pytest.raises(sa.InputError, match=match):
        sa.tl.nmf(adata, **{**NMF_KW, **kwargs})
    snap.assert_unchanged(adata)


def test_negative_values_refused(cellbench_hvg):
    adata = cellbench_hvg[:50].copy()
    adata.X = adata.X.toarray() - 1.0
    _refused(adata, "negative values; NMF needs non-negative data", transform="none")


def test_non_integer_values_refused_for_log1p(cellbench_hvg):
    adata = cellbench_hvg[:50].copy()
    adata.X = adata.X * 0.5
    _refused(adata, "non-integer values .* transform='log1p' normalises raw counts")


def test_too_many_components_refused(cellbench_hvg):
    adata = cellbench_hvg[:6].copy()
    sa.pp.drop_empty(adata)
    _refused(adata, r"n_components=10 is more than min\(n_cells, n_genes\) = 6")


@pytest.mark.parametrize("kwargs, match", [
    (dict(solver="cd"), "solver='cd'; choose one of"),
    (dict(loss="kl"), "loss='kl' is fitted by multiplicative updates: pass solver='mu'"),
    (dict(batch_key="batch", solver="mu"), "With batch_key, integrative NMF is fitted with loss='frobenius'"),
    (dict(batch_key="protocol_typo"), "batch_key='protocol_typo' is not a column"),
])
def test_bad_options_refused(cellbench_hvg, kwargs, match):
    _refused(cellbench_hvg.copy(), match, **kwargs)


BAD_TYPES_AND_RANGES = [
    (dict(max_iter=1.5), r"max_iter=1.5 \(a keyword of sa.tl.nmf\) is invalid: it must be an integer >= 1"),
    (dict(max_iter=True), r"max_iter=True .* an integer >= 1"),
    (dict(max_iter=0), r"max_iter=0 .* an integer >= 1"),
    (dict(n_components="x"), r"n_components='x' is invalid .* an integer from 1 to 1000"),
    (dict(n_components=2.0), r"n_components=2.0 is invalid"),
    (dict(n_components=False), r"n_components=False is invalid"),
    (dict(n_components=0), r"n_components=0 is invalid"),
    (dict(tol=-1e-4), r"tol=-0.0001 .* a finite number >= 0"),
    (dict(tol=float("nan")), r"tol=nan .* a finite number >= 0"),
    (dict(target_sum=0), r"target_sum=0 .* a finite number > 0"),
    (dict(target_sum="1e4"), r"target_sum='1e4' .* a finite number > 0"),
    (dict(lam=-1.0), r"lam=-1.0 .* a finite number >= 0"),
    (dict(lam=float("inf")), r"lam=inf .* a finite number >= 0"),
    (dict(n_quantiles=1), r"n_quantiles=1 .* an integer >= 2"),
    (dict(n_quantiles=50.0), r"n_quantiles=50.0 .* an integer >= 2"),
    (dict(min_cells=0), r"min_cells=0 .* an integer >= 1"),
    (dict(min_match=1.5), r"min_match=1.5 .* a number from -1 to 1"),
    (dict(min_match=None), r"min_match=None .* a number from -1 to 1"),
    (dict(batch_size=0), r"batch_size=0 .* None or an integer >= 1"),
    (dict(batch_size=128.0), r"batch_size=128.0 .* None or an integer >= 1"),
    (dict(loss="l2"), r"loss='l2'; choose one of \('frobenius', 'kl'\)"),
    (dict(transform="log"), r"transform='log'; choose one of \('log1p', 'none'\)"),
    (dict(init=None), r"init=None; choose one of"),
    (dict(key_added=5), r"key_added=5 .* a non-empty str .* key_added='X_nmf'"),
    (dict(uns_key=""), r"uns_key='' .* a non-empty str"),
    (dict(copy="no"), r"copy='no' .* True or False"),
]


@pytest.mark.parametrize("kwargs, match", BAD_TYPES_AND_RANGES,
                         ids=[",".join(f"{k}={x!r}" for k, x in kw.items()) for kw, _ in BAD_TYPES_AND_RANGES])
def test_options_refused_by_type_and_range_before_any_read(cellbench_hvg, monkeypatch, kwargs, match):
    """Options are checked, not converted (max_iter=1.5 ran as 1, n_components="x" was a bare
    ValueError, loss / transform / target_sum were checked only after reading the cells)."""
    from scgen_ae.spec import DataSpec

    monkeypatch.setattr(DataSpec, "learn", lambda *a, **k: pytest.fail("read the cells before checking"))
    _refused(cellbench_hvg[:50].copy(), match, **kwargs)


def test_bad_option_on_a_backed_file_refused_before_reading_it(cellbench_hvg, tmp_path, monkeypatch):
    import hashlib

    from scgen_ae import ondisk

    path = tmp_path / "cells.h5ad"
    cellbench_hvg[:50].copy().write_h5ad(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(ondisk.OnDiskCellData, "read_span", lambda *a, **k: pytest.fail("read X before refusing"))
    backed = ad.read_h5ad(path, backed="r")
    obsm, uns = set(backed.obsm), set(backed.uns)
    with pytest.raises(sa.InputError, match=r"max_iter=1.5 .* an integer >= 1"):
        sa.tl.nmf(backed, **{**NMF_KW, "batch_size": 16, "max_iter": 1.5})
    assert (set(backed.obsm), set(backed.uns)) == (obsm, uns)
    backed.file.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


# ---------------------------------------------------------------- solver internals

def test_objective_from_chunk_statistics_is_exact():
    """iNMF on small sparse chunks: the objective kept from per-chunk statistics equals the dense one."""
    X = sp.random(57, 23, density=0.3, format="csr", random_state=1, dtype=np.float32)
    fit = _nmf_solver.fit([X[:30], X[30:]], 4, max_iter=30, chunk_size=7, integrative=True, lam=2.0, seed=3)
    W = np.vstack([w.numpy() for w in fit.W])
    Hb = [(fit.H + fit.V[b]).numpy() for b in range(2)]
    direct = sum(frobenius(Xb, w.numpy(), h) + 1.0 * np.square(w.numpy() @ fit.V[b].numpy()).sum()
                 for b, (Xb, w, h) in enumerate(zip([X[:30], X[30:]], fit.W, Hb)))
    assert fit.loss[-1] == pytest.approx(direct / X.shape[0], rel=1e-4)
    assert (W >= 0).all() and (fit.V.numpy() >= 0).all()


# ---------------------------------------------------------------- plot and CLI

def test_history_plot_draws_the_sketch_phase_where_it_ran(plain):
    """pl.history of a plain fit: passes over X before and after the dashed sketch passes,
    on one axis in the order they ran, labelled with what the loss is."""
    adata, _ = plain
    hist = adata.uns["nmf"]["history"]
    ax = sa.pl.history(adata, return_fig=True, key="nmf").axes[0]
    before, sketch, after = (line for line in ax.get_lines() if line.get_linestyle() != ":")
    at, n_sketch = hist["sketch_at"], len(hist["sketch_loss"])
    np.testing.assert_array_equal(before.get_xdata(), np.arange(1, at + 1))
    np.testing.assert_array_equal(sketch.get_xdata(), np.arange(at + 1, at + n_sketch + 1))
    assert sketch.get_linestyle() == "--" and after.get_xdata()[0] == at + n_sketch + 1
    np.testing.assert_array_equal(np.concatenate([before.get_ydata(), after.get_ydata()]), hist["train_loss"])
    assert ax.get_ylabel() == "1/2 squared error per cell" == hist["loss_label"]
    assert ax.get_xlabel() == "pass"


def test_loadings_plot_and_its_errors(integrated):
    adata = integrated[0].copy()
    adata.obsm["X_2d"] = adata.obsm["X_nmf"][:, :2].copy()  # a given 2-D layout: no UMAP to compute
    fig = sa.pl.loadings(adata, return_fig=True, basis="X_nmf", components=[0, 1, 2], layout="X_2d")
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in titled] == [f"NMF factors: factor {j}\non 2d" for j in range(3)]
    # each panel is coloured by that factor's usage
    for ax, j in zip(titled, range(3)):
        np.testing.assert_allclose(ax.collections[0].get_array(), adata.obsm["X_nmf"][:, j], rtol=1e-6)
    snap = Snapshot(adata)
    with pytest.raises(sa.InputError, match=f"obsm\\['X_nmf'\\] has {K} factors, so pass indices 0..{K - 1}"):
        sa.pl.loadings(adata, basis="X_nmf", components=[0, K])
    with pytest.raises(sa.InputError, match="basis='X_lda' is not in adata.obsm"):
        sa.pl.loadings(adata, basis="X_lda")
    snap.assert_unchanged(adata)


def test_cli_integrate_with_nmf(cellbench_raw, tmp_path, capsys):
    src, out, model_path = tmp_path / "in.h5ad", tmp_path / "out.h5ad", tmp_path / "nmf.npz"
    cellbench_raw.write_h5ad(src)
    rc = main(["integrate", str(src), "--model", "nmf", "--batch-key", "batch", "--label-key", "cell_type",
               "-o", str(out), "--save-model", str(model_path), "--n-top-genes", "500", "--threads", "1", "--quiet"])
    assert rc == 0
    assert "X_nmf" in capsys.readouterr().out
    result = ad.read_h5ad(out)
    assert result.obsm["X_nmf"].shape == (result.n_obs, 10) and result.uns["nmf"]["varm_key"] == "nmf_loadings"
    model = sa.NMF.load(model_path, adata=result)
    # the output keeps every gene; the model's rows are those marked in var
    rows = result.var["scgen_ae_model_gene"].to_numpy(bool)
    assert rows.sum() == 500 and not result.varm["nmf_loadings"][~rows].any()
    np.testing.assert_array_equal(model.loadings, result.varm["nmf_loadings"][rows])


def test_hals_row_sweeps_are_the_textbook_update_on_cpu_and_device(monkeypatch):
    """hals_rows (numpy sweeps on the CPU, torch ones on devices) equals the textbook HALS
    update h_j <- max(0, h_j + (b_j - a_j H) / a_jj), row after row, and leaves a component
    without curvature alone."""
    gen = torch.Generator().manual_seed(0)
    W = torch.rand(300, 6, generator=gen)
    X = torch.rand(300, 40, generator=gen)
    A, B = W.T @ W, W.T @ X
    A[2, :] = A[:, 2] = 0.0  # a dead component
    H = torch.rand(6, 40, generator=gen)
    textbook = H.clone()
    for _ in range(3):
        for j in (0, 1, 3, 4, 5):
            textbook[j] = (textbook[j] + (B[j] - A[j] @ textbook) / A[j, j]).clamp_min(0.0)
    by_numpy = _nmf_solver.hals_rows(H.clone(), B, A, 3)
    monkeypatch.setattr(_nmf_solver, "_sweep_numpy", _nmf_solver._sweep_torch)  # the device kernel, on the CPU
    by_torch = _nmf_solver.hals_rows(H.clone(), B, A, 3)
    for got in (by_numpy, by_torch):
        torch.testing.assert_close(got, textbook, rtol=1e-5, atol=1e-6)
        assert torch.equal(got[2], H[2]) and (got >= 0).all()
    assert not torch.equal(by_numpy, H)


def test_convergence_needs_a_small_drop_not_a_rise():
    assert _nmf_solver._converged([100.0, 99.99999], 1e-6)
    assert not _nmf_solver._converged([100.0, 99.0], 1e-6)  # still falling fast
    assert not _nmf_solver._converged([100.0, 100.00001], 1e-6)  # a rise: keep going
    assert not _nmf_solver._converged([100.0], 1e-6)
