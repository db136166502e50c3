"""tl.differential_expression: calibration on a null split of real cells, recovery of planted
genes, scanpy's rank_genes_groups layout, reproducibility, bounded memory, and every refusal."""
from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

import scgen_ae as sa
import scgen_ae.tl._de as de_front
from scgen_ae.de import posterior_fdr, row_medians

from .conftest import FAST, fit_copy

KEY = "rank_genes_groups_vae"
N_PLANTED = 20


def _called(df) -> set[str]:
    return set(df.index[df["is_de_fdr_0.05"]])


@pytest.fixture(scope="module")
def planted():
    """(counts, VAE): 400 cells x 200 genes of negative-binomial counts in two groups. Of the
    first N_PLANTED genes, half are 4x higher in group "A" and half 4x higher in "B", in pairs
    of equal expression, so that the other genes keep their shares of the library (a one-sided
    change would lower them all)."""
    rng = np.random.default_rng(0)
    n_cells, n_genes, half = 400, 200, N_PLANTED // 2
    group = np.repeat(["A", "B"], n_cells // 2)
    shares = rng.lognormal(0.0, 1.0, n_genes)
    shares[half:N_PLANTED] = shares[:half]
    fold = np.ones((n_cells, n_genes))
    fold[group == "A", :half] = 4.0
    fold[group == "B", half:N_PLANTED] = 4.0
    mu = shares * fold
    mu = mu / mu.sum(1, keepdims=True) * rng.lognormal(np.log(3000), 0.2, n_cells)[:, None]
    counts = rng.negative_binomial(5.0, 5.0 / (5.0 + mu)).astype(np.float32)
    obs = pd.DataFrame({"group": group}, index=[f"c{i}" for i in range(n_cells)])
    adata = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    model = sa.tl.vae(adata, n_latent=4, n_hidden=64, max_epochs=60, seed=0, **FAST)
    return adata, model


@pytest.fixture(scope="module")
def cellbench_model(cellbench_hvg):
    """(copy of cellbench_hvg, VAE): trained long enough to tell the cell lines apart (the
    session's 15-epoch model is not: its fold changes between lines are a quarter of these)."""
    adata = cellbench_hvg.copy()
    return adata, sa.tl.vae(adata.copy(), batch_key="batch", n_latent=8, max_epochs=60, seed=0, **FAST)


# ---------------------------------------------------------------- the statistics

def test_planted_genes_rank_first_and_make_the_fdr_set(planted):
    adata, model = planted
    df = sa.tl.differential_expression(model, adata.copy(), groupby="group", group1="A", group2="B",
                                       n_samples=2000)
    truth = {f"g{j}" for j in range(N_PLANTED)}
    top = set(df.index[:N_PLANTED])
    assert len(top & truth) >= 0.8 * N_PLANTED, sorted(top - truth)
    called = _called(df)
    assert len(called & truth) >= 0.8 * N_PLANTED and len(called - truth) <= 0.2 * len(called), (called, truth)
    half = N_PLANTED // 2
    up, down = df.loc[[f"g{j}" for j in range(half)]], df.loc[[f"g{j}" for j in range(half, N_PLANTED)]]
    assert (up["lfc_mean"] > 1.0).all() and (down["lfc_mean"] < -1.0).all()  # log2(4) = 2, shrunk by the model
    assert (up["raw_mean1"] > 2 * up["raw_mean2"]).all() and (down["raw_mean2"] > 2 * down["raw_mean1"]).all()
    # the DAE (no posterior, only the variation between cells) finds them too
    _, dae = fit_copy(sa.tl.denoise, adata, max_epochs=30, seed=0, **FAST)
    by_dae = sa.tl.differential_expression(dae, adata.copy(), groupby="group", group1="A", group2="B",
                                           n_samples=2000)
    assert len(set(by_dae.index[:N_PLANTED]) & truth) >= 0.8 * N_PLANTED


def test_null_split_of_real_cells_calls_far_fewer_genes_than_a_true_split(cellbench_model):
    """One cell line of one protocol split at random: a handful of genes at most, where two
    cell lines of the same protocol (same model, same cells' depth) give hundreds."""
    adata, model = cellbench_model
    adata = adata.copy()
    one = (adata.obs["cell_type"] == "H1975") & (adata.obs["batch"] == "CEL-seq2")
    rng = np.random.default_rng(0)
    adata.obs["split"] = np.where(one, np.where(rng.random(adata.n_obs) < 0.5, "a", "b"), "other")
    celseq = adata[adata.obs["batch"] == "CEL-seq2"].copy()
    null = sa.tl.differential_expression(model, adata, groupby="split", group1="a", group2="b", n_samples=2000)
    true = sa.tl.differential_expression(model, celseq, groupby="cell_type", group1="H1975", group2="H2228",
                                         n_samples=2000)
    n_null, n_true = len(_called(null)), len(_called(true))
    assert n_true >= 0.1 * adata.n_vars
    assert n_null <= 0.01 * adata.n_vars and n_null <= 0.05 * n_true, (n_null, n_true)
    # the two halves' fold changes are centred on 0 where the lines' are not
    assert null["lfc_mean"].abs().median() < 0.5 * true["lfc_mean"].abs().median()


def test_posterior_fdr_is_the_mean_error_of_the_list():
    p = np.array([0.99, 0.5, 1.0, 0.9, 0.97])
    q = posterior_fdr(p)
    order = np.argsort(-p)
    np.testing.assert_allclose(q[order], np.cumsum(1 - p[order]) / np.arange(1, 6))
    assert list(q <= 0.05) == [True, False, True, True, True]  # mean error of the first four: 0.035


@pytest.mark.parametrize("n", [1, 2, 7, 10])
def test_row_medians_are_numpys(n):
    samples = np.random.default_rng(n).normal(size=(5, n)).astype(np.float32)
    np.testing.assert_allclose(row_medians(samples.copy()), np.median(samples, axis=1), rtol=1e-6)


def test_samples_are_expression_shares_and_the_head_alone_is_the_decoders(planted):
    import torch

    from scgen_ae.nn import CountDecoder

    adata, model = planted
    data = model._cell_data(adata)
    shares = model.sample_scale(data, np.array([3, 3, 0]), np.zeros(3, np.int64), torch.Generator().manual_seed(0))
    assert shares.shape == (3, adata.n_vars) and not torch.equal(shares[0], shares[1])  # two draws of one cell
    np.testing.assert_allclose(shares.sum(1).numpy(), 1.0, rtol=1e-5)
    decoder = CountDecoder(4, 7, 8, 1, n_cats=(3,), n_extra_heads=1).eval()
    torch.nn.init.normal_(decoder.heads.offsets[0].weight)
    z, cats = torch.randn(5, 4), (torch.tensor([0, 2, 1, 2, 0]),)
    torch.testing.assert_close(decoder.first_head(z, cats), decoder(z, cats)[0])


# ---------------------------------------------------------------- outputs

def test_rank_genes_groups_layout_reads_back_and_plots(planted, tmp_path):
    adata, model = planted
    adata = adata.copy()
    df = sa.tl.differential_expression(model, adata, groupby="group", group1="A", n_samples=500)
    assert (df["group2"] == "rest").all() and (df["comparison"] == "A vs rest").all()
    for col in ("proba_de", "bayes_factor", "lfc_mean", "lfc_median", "lfc_std", "is_de_fdr_0.05", "raw_mean1",
                "raw_mean2", "non_zeros_proportion1", "non_zeros_proportion2"):
        assert col in df and df[col].notna().all(), col
    record = adata.uns[KEY]
    assert record["params"]["groupby"] == "group" and record["params"]["reference"] == "rest"
    table = sc.get.rank_genes_groups_df(adata, "A", key=KEY)
    assert len(table) == adata.n_vars and table["scores"].is_monotonic_decreasing
    # up-regulated genes first, down-regulated last
    assert table["names"].iloc[0] in {f"g{j}" for j in range(N_PLANTED // 2)}
    assert table["names"].iloc[-1] in {f"g{j}" for j in range(N_PLANTED // 2, N_PLANTED)}
    called = sc.get.rank_genes_groups_df(adata, "A", key=KEY, pval_cutoff=0.05 + 1e-12)
    assert set(called["names"]) == _called(df)
    np.testing.assert_allclose(table.set_index("names").loc[df.index, "logfoldchanges"], df["lfc_mean"], rtol=1e-5)
    assert {"pct_nz_group", "pct_nz_reference"} <= set(table.columns)
    sc.pl.rank_genes_groups(adata, key=KEY, n_genes=5, show=False)
    sc.pl.rank_genes_groups_dotplot(adata, key=KEY, n_genes=3, show=False)
    adata.write_h5ad(tmp_path / "de.h5ad")
    back = ad.read_h5ad(tmp_path / "de.h5ad")
    assert list(sc.get.rank_genes_groups_df(back, "A", key=KEY)["names"]) == list(table["names"])


def test_every_group_against_the_rest_and_vanilla_mode(cellbench_model):
    adata, model = cellbench_model
    adata = adata.copy()
    df = sa.tl.differential_expression(model, adata, groupby="cell_type", group1=None, mode="vanilla",
                                       n_samples=300, key_added="de")
    groups = sorted(adata.obs["cell_type"].astype(str).unique())
    assert sorted(df["group1"].unique()) == groups and len(df) == len(groups) * adata.n_vars
    assert list(adata.uns["de"]["names"].dtype.names) == groups
    np.testing.assert_allclose(df["proba_m1"] + df["proba_m2"], 1.0)
    assert adata.uns["de"]["params"]["method"] == "vae_vanilla"


def test_same_seed_same_result_and_gene_blocks_change_nothing(planted, monkeypatch):
    adata, model = planted
    run = dict(groupby="group", group1="A", group2="B", n_samples=300, chunk_size=128)
    first = sa.tl.differential_expression(model, adata.copy(), **run)
    pd.testing.assert_frame_equal(first, sa.tl.differential_expression(model, adata.copy(), **run))
    other = sa.tl.differential_expression(model, adata.copy(), random_state=1, **run)
    assert not np.allclose(first["lfc_mean"], other.loc[first.index, "lfc_mean"])
    # a store too small for all genes: blocks of 70 genes, each drawing the same pairs again
    monkeypatch.setattr(de_front, "LFC_STORE_BYTES", 4 * 300 * 70)
    pd.testing.assert_frame_equal(first, sa.tl.differential_expression(model, adata.copy(), **run))


def test_cells_on_disk_give_the_in_memory_result(planted, tmp_path):
    """A backed .h5ad is read a block of rows at a time (statistics) and by rows (samples)."""
    adata, model = planted
    adata.write_h5ad(tmp_path / "planted.h5ad")
    backed = sa.read_backed(tmp_path / "planted.h5ad")
    run = dict(groupby="group", group1=["A", "A"], n_samples=300)  # a repeated group is one comparison
    on_disk = sa.tl.differential_expression(model, backed, **run)
    in_memory = sa.tl.differential_expression(model, adata.copy(), **run)
    assert sa.ondisk.is_on_disk(backed) and len(on_disk) == adata.n_vars
    pd.testing.assert_frame_equal(on_disk, in_memory, rtol=1e-5)


def test_replacing_a_result_warns(planted):
    adata, model = planted
    adata = adata.copy()
    sa.tl.differential_expression(model, adata, groupby="group", group1="A", n_samples=50)
    with pytest.warns(UserWarning, match=r"Replacing adata.uns\['rank_genes_groups_vae'\]"):
        sa.tl.differential_expression(model, adata, groupby="group", group1="A", n_samples=50)


# ---------------------------------------------------------------- refusals

def _subset_missing_genes(adata):
    return adata[:, adata.var_names[5:]].copy()


def _one_cell_group(adata):
    adata.obs["group"] = adata.obs["group"].astype(str)
    adata.obs.iloc[:2, adata.obs.columns.get_loc("group")] = "tiny"
    return adata


BAD = {
    "unknown group": (lambda a: a, dict(group1="C"), r"group1='C' is not a value of adata.obs\['group'\].*'A', 'B'"),
    "unknown group2": (lambda a: a, dict(group1="A", group2="Z"), r"group2='Z' is not a value"),
    "tiny group": (_one_cell_group, dict(group1="tiny"), r"group1='tiny' has 2 cells.*at least 3"),
    "same groups": (lambda a: a, dict(group1="A", group2="A"), r"both 'A'"),
    "groupby missing": (lambda a: a, dict(groupby="cluster", group1="A"),
                        r"groupby='cluster' is not a column of adata.obs \(columns: 'group'"),
    "missing genes": (_subset_missing_genes, dict(group1="A"),
                      r"5 of the model's 200 genes are not in adata.var_names"),
    "bad mode": (lambda a: a, dict(group1="A", mode="bayes"), r"mode='bayes' is invalid; choose 'change'"),
    "bad delta": (lambda a: a, dict(group1="A", delta=-1), r"delta=-1 is invalid"),
    "bad fdr": (lambda a: a, dict(group1="A", fdr_target=5), r"fdr_target=5 is invalid"),
    "bad n_samples": (lambda a: a, dict(group1="A", n_samples=1), r"n_samples=1 is invalid"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_before_any_work(planted, snapshot, monkeypatch, case):
    adata, model = planted
    prepare, kwargs, match = BAD[case]
    adata = prepare(adata.copy())
    snap = snapshot(adata)

    def no_work(*args, **kw):
        raise AssertionError("posterior samples were drawn before the input was refused")

    monkeypatch.setattr(type(model), "sample_scale", no_work)
    with pytest.raises(sa.InputError, match=match):
        sa.tl.differential_expression(model, adata, **{"groupby": "group", **kwargs})
    snap.assert_unchanged(adata)


@pytest.mark.parametrize("bad_model", ["vae.npz", "nmf", "gaussian"])
def test_wrong_model_is_refused(planted, snapshot, bad_model):
    adata, _ = planted
    adata = adata.copy()
    if bad_model == "nmf":
        bad_model = sa.tl.nmf(adata.copy(), n_components=3, max_iter=5, seed=0)
    elif bad_model == "gaussian":
        logged = ad.AnnData(adata.X.copy(), obs=adata.obs[[]])
        sc.pp.normalize_total(logged)
        sc.pp.log1p(logged)
        bad_model = sa.tl.vae(logged, likelihood="gaussian", n_latent=2, n_hidden=16, max_epochs=1, **FAST)
    snap = snapshot(adata)
    with pytest.raises(sa.InputError, match=r"model (must be a trained sa.VAE|was trained with likelihood='gaussian')"):
        sa.tl.differential_expression(bad_model, adata, groupby="group", group1="A")
    snap.assert_unchanged(adata)
