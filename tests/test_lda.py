"""tl.lda (ProdLDA with batch background, and classic VB LDA), the LDA model objects,
pl.topics and the CLI's --model lda, on the shared real data."""
from __future__ import annotations

import hashlib

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

import scgen_ae as sa
from scgen_ae import ondisk
from scgen_ae.data import to_csr32, train_validation_split
from scgen_ae.models import lda_vb, topic
from scgen_ae.models.topic import perplexity_from_probs

from .conftest import FAST, fit_copy

PROD = dict(n_topics=6, max_epochs=40, seed=0, **FAST)
TINY = dict(n_topics=3, n_hidden=16, max_epochs=3, **FAST)


@pytest.fixture(autouse=True)
def _one_thread():
    """Transforms run outside training's thread cap: keep them on one thread, as CI's budget assumes."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def lda_batch(cellbench_hvg):
    """(annotated copy of cellbench_hvg, batch-aware ProdLDA). Do not modify."""
    return fit_copy(sa.tl.lda, cellbench_hvg, batch_key="batch", **PROD)


@pytest.fixture(scope="session")
def lda_plain(cellbench_hvg):
    """The same ProdLDA without batch_key."""
    return fit_copy(sa.tl.lda, cellbench_hvg, **PROD)


@pytest.fixture(scope="session")
def lda_classic(cellbench_hvg):
    """Classic VB LDA, 6 topics, its default 20 EM iterations."""
    return fit_copy(sa.tl.lda, cellbench_hvg, n_topics=6, method="classic", **FAST)


def _held_out(adata, seed=0):
    return train_validation_split(adata.n_obs, 0.1, np.random.default_rng(seed))


# ---------------------------------------------------------------- outputs

@pytest.mark.parametrize("fixture", ["lda_batch", "lda_classic"])
def test_outputs_non_negative_and_normalised(fixture, request, cellbench_hvg):
    adata, model = request.getfixturevalue(fixture)
    theta = adata.obsm["X_lda"]
    assert theta.shape == (adata.n_obs, 6)
    assert (theta >= 0).all()
    np.testing.assert_allclose(theta.sum(1), 1.0, atol=1e-4)
    topics = adata.varm["lda_topics"]
    assert topics.shape == (adata.n_vars, 6)
    assert (topics >= 0).all()
    np.testing.assert_allclose(topics.sum(0), 1.0, atol=1e-4)
    uns = adata.uns["lda"]
    assert uns["key_added"] == "X_lda" and uns["varm_key"] == "lda_topics"
    assert uns["params"]["n_topics"] == 6
    assert uns["params"]["method"] == ("classic" if fixture == "lda_classic" else "prodlda")
    assert 1.0 < uns["train_perplexity"] < adata.n_vars and 1.0 < uns["perplexity"] < adata.n_vars
    assert isinstance(model, sa.LDA)
    assert "X_lda" not in cellbench_hvg.obsm and "lda" not in cellbench_hvg.uns  # copy=True


@pytest.mark.parametrize("fixture", ["lda_batch", "lda_classic"])
def test_reconstruction_loss_decreases(fixture, request):
    adata, _ = request.getfixturevalue(fixture)
    loss = np.asarray(adata.uns["lda"]["history"]["train_loss"])
    assert np.isfinite(loss).all()
    assert loss[-1] < loss[0]
    if fixture == "lda_classic":  # batch VB: the bound's data term falls at (nearly) every iteration here
        assert (np.diff(loss) < 0).mean() >= 0.8


def test_reported_perplexity_is_held_out_and_reproducible(lda_batch, lda_classic):
    for adata, model in (lda_batch, lda_classic):
        _, val = _held_out(adata)
        cells = adata[val]
        direct = perplexity_from_probs(to_csr32(cells.X), model.predictive(cells))
        assert direct == pytest.approx(adata.uns["lda"]["perplexity"], rel=1e-4)
        assert model.perplexity(cells) == pytest.approx(direct, rel=1e-6)


def test_classic_perplexity_at_least_as_good_as_sklearn(lda_classic):
    """Same model, same priors, same held-out cells; sklearn with its default 10 batch-VB iterations."""
    from sklearn.decomposition import LatentDirichletAllocation

    adata, _ = lda_classic
    train, val = _held_out(adata)
    X = to_csr32(adata.X)
    ref = LatentDirichletAllocation(6, learning_method="batch", max_iter=10, random_state=0).fit(X[train])
    probs = ref.transform(X[val]) @ (ref.components_ / ref.components_.sum(1, keepdims=True))
    assert adata.uns["lda"]["perplexity"] <= 1.01 * perplexity_from_probs(X[val], probs)


# ---------------------------------------------------------------- science

def test_batch_aware_mixes_better_and_keeps_cell_lines(lda_batch, lda_plain):
    with_batch, _ = lda_batch
    plain, _ = lda_plain
    mixed = sa.metrics.batch_entropy(with_batch.obsm["X_lda"], with_batch.obs["batch"])
    apart = sa.metrics.batch_entropy(plain.obsm["X_lda"], plain.obs["batch"])
    assert mixed > apart + 0.1, (mixed, apart)
    assert sa.metrics.clustering_ari(with_batch.obsm["X_lda"], with_batch.obs["cell_type"]) >= 0.9


# ---------------------------------------------------------------- reproducibility, new cells, files

@pytest.mark.parametrize("method", ["prodlda", "classic"])
def test_seeds_reproduce(method, cellbench_3protocols):
    kw = dict(TINY, batch_key="batch") if method == "prodlda" else dict(n_topics=3, method=method, max_iter=2, **FAST)
    a = sa.tl.lda(cellbench_3protocols, copy=True, seed=3, **kw).obsm["X_lda"]
    b = sa.tl.lda(cellbench_3protocols, copy=True, seed=3, **kw).obsm["X_lda"]
    c = sa.tl.lda(cellbench_3protocols, copy=True, seed=4, **kw).obsm["X_lda"]
    assert np.array_equal(a, b)
    assert not np.allclose(a, c, atol=1e-3)


@pytest.mark.parametrize("fixture", ["lda_batch", "lda_classic"])
def test_transform_new_cells_reordered_genes_and_files(fixture, request, tmp_path):
    adata, model = request.getfixturevalue(fixture)
    theta = model.transform(adata)
    if fixture == "lda_classic":
        # held-out cells: the same cold E-step; training cells were continued from their fitted gamma
        _, val = _held_out(adata)
        np.testing.assert_allclose(theta[val], adata.obsm["X_lda"][val], atol=1e-4)
        assert np.abs(theta - adata.obsm["X_lda"]).mean() < 0.01
        assert (theta.argmax(1) == adata.obsm["X_lda"].argmax(1)).mean() > 0.95
    else:
        np.testing.assert_allclose(theta, adata.obsm["X_lda"], atol=1e-5)
    # new cells with shuffled, extra genes: matched by name
    sub = adata[:40].copy()
    perm = np.random.default_rng(0).permutation(sub.n_vars)
    shuffled = sub[:, perm].copy()
    np.testing.assert_allclose(model.transform(shuffled), theta[:40], atol=1e-5)
    path = model.save(tmp_path / "lda.npz")
    loaded = sa.LDA.load(path, adata=adata)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(loaded.transform(sub), theta[:40], atol=1e-5)
    np.testing.assert_allclose(loaded.topic_gene_matrix(), adata.varm["lda_topics"], atol=1e-6)
    with pytest.raises(sa.ModelFileError, match="not a VAE"):
        sa.VAE.load(path)


def _with_config_field(path, name, value):
    """The model file at ``path`` rewritten with ``config[name] = value``, re-hashed the way
    :func:`scgen_ae.io.write_model_file` hashes it (what a file of an older version holds)."""
    import json

    from scgen_ae import io as sio

    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays.pop("__header__").tobytes().decode("utf-8"))
    header["config"][name] = value
    header["sha256"] = sio._digest(header, arrays)
    np.savez(path, __header__=np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8), **arrays)
    return path


@pytest.mark.parametrize("fixture, written", [("lda_batch", "poisson"), ("lda_classic", "counts")])
def test_files_written_with_a_likelihood_field_still_load(fixture, written, request, tmp_path):
    # topic model configs carried a likelihood they do not have, for the shared input checks;
    # files saved then hold it in their config
    adata, model = request.getfixturevalue(fixture)
    sub = adata[:40].copy()
    old = _with_config_field(model.save(tmp_path / "old.npz"), "likelihood", written)
    loaded = sa.LDA.load(old)
    assert type(loaded) is type(model) and loaded.config == model.config and loaded.spec == model.spec
    np.testing.assert_array_equal(loaded.transform(sub), model.transform(sub))
    edited = _with_config_field(model.save(tmp_path / "edited.npz"), "likelihood", "gaussian")
    with pytest.raises(sa.ModelFileError, match="only ever held"):
        sa.LDA.load(edited)


# ---------------------------------------------------------------- backed (on-disk) input

@pytest.fixture
def cellbench_file(cellbench_hvg, tmp_path):
    """(path, SHA-256) of cellbench_hvg written as an .h5ad, to open backed."""
    path = tmp_path / "cellbench_hvg.h5ad"
    cellbench_hvg.copy().write_h5ad(path)  # a copy: writing may turn strings into categoricals
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_classic_from_a_backed_file_equals_in_memory(cellbench_hvg, cellbench_file, monkeypatch):
    """The E-steps read the cells a block at a time, the same blocks from disk as in memory, so
    the fit runs the same float operations: equal results. Blocks of 100 cells here, so that
    the 450 training cells take several (they fit in one block of the default size)."""
    path, digest = cellbench_file
    monkeypatch.setattr(lda_vb, "E_STEP_CELLS", 100)
    sizes, read_rows = [], ondisk.OnDiskCellData.read_rows
    monkeypatch.setattr(ondisk.OnDiskCellData, "read_rows",
                        lambda self, rows, **kw: sizes.append(len(rows)) or read_rows(self, rows, **kw))
    backed, memory = ad.read_h5ad(path, backed="r"), cellbench_hvg.copy()
    kw = dict(n_topics=4, method="classic", max_iter=3, seed=0, **FAST)
    model = sa.tl.lda(backed, **kw)
    sa.tl.lda(memory, **kw)
    assert ondisk.is_on_disk(backed)  # X was streamed, never loaded into the AnnData
    assert sizes.count(100) == 4 * (3 + 1)  # each EM iteration and the final E-step read 4 full blocks again
    np.testing.assert_array_equal(backed.obsm["X_lda"], memory.obsm["X_lda"])
    np.testing.assert_array_equal(backed.varm["lda_topics"], memory.varm["lda_topics"])
    disk, mem = backed.uns["lda"], memory.uns["lda"]
    np.testing.assert_array_equal(disk["history"]["train_loss"], mem["history"]["train_loss"])
    assert (disk["perplexity"], disk["train_perplexity"]) == (mem["perplexity"], mem["train_perplexity"])
    # the classic model applied to the file (it used to fail there with an AttributeError)
    np.testing.assert_array_equal(model.transform(backed), model.transform(memory))
    assert model.perplexity(backed) == model.perplexity(memory)
    backed.file.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="classic", batch_key="batch"), "method='classic' is the textbook LDA without batch"),
    (dict(batch_key="no_such_column"), "batch_key='no_such_column' is not a column of adata.obs"),
    (dict(batch_key="batch", label_key="no_such_column"), "label_key='no_such_column' is not a column"),
    (dict(method="classic", label_key="cell_line"), "label_key='cell_line' names the cell-type labels"),
], ids=["classic", "batch_key", "label_key", "classic label_key"])
def test_batch_options_on_a_backed_file_refused_before_reading_it(cellbench_file, monkeypatch, kwargs, match):
    path, digest = cellbench_file
    monkeypatch.setattr(ondisk.OnDiskCellData, "read_span", lambda *a, **k: pytest.fail("read X before refusing"))
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(sa.InputError, match=match):
        sa.tl.lda(backed, n_topics=3, **kwargs, **FAST)
    assert "X_lda" not in backed.obsm and "lda" not in backed.uns
    backed.file.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


# ---------------------------------------------------------------- errors leave adata unchanged

def test_classic_with_batch_key_refused(cellbench_3protocols, snapshot):
    adata = cellbench_3protocols.copy()
    snap = snapshot(adata)
    with pytest.raises(sa.InputError, match="method='classic' is the textbook LDA without batch"):
        sa.tl.lda(adata, method="classic", batch_key="batch", **FAST)
    snap.assert_unchanged(adata)


@pytest.mark.parametrize("kwargs, why, fix", [
    (dict(method="classic"), "method='classic' takes no batches", "method='prodlda' with batch_key="),
    (dict(), "batch_key is None", "or batch_key= naming the obs column"),
    (dict(backend="scvi-tools"), "backend='scvi-tools' \\(AmortizedLDA\\) takes no batches",
     "method='prodlda' with batch_key="),
], ids=["classic", "prodlda", "scvi-tools"])
def test_label_key_without_batches_refused(cellbench_hvg, snapshot, monkeypatch, kwargs, why, fix):
    """label_key only feeds the composition check of a batch-aware fit: without batches it was
    accepted and silently unused (classic LDA refuses batch_key, so it never ran there)."""
    from scgen_ae.spec import DataSpec

    monkeypatch.setattr(DataSpec, "learn", lambda *a, **k: pytest.fail("read the cells before checking"))
    adata = cellbench_hvg[:50].copy()
    snap = snapshot(adata)
    with pytest.raises(sa.InputError, match=rf"label_key='cell_line' .* but {why}: .* Pass label_key=None") as info:
        sa.tl.lda(adata, n_topics=3, label_key="cell_line", **FAST, **kwargs)
    assert fix in str(info.value)
    snap.assert_unchanged(adata)


def test_bad_arguments_refused(cellbench_3protocols, snapshot):
    adata = cellbench_3protocols.copy()
    snap = snapshot(adata)
    with pytest.raises(ValueError, match="method='nmf'"):
        sa.tl.lda(adata, method="nmf")
    with pytest.raises(TypeError, match="max_epoch"):
        sa.tl.lda(adata, max_epoch=3, **FAST)
    with pytest.raises(TypeError, match="max_epochs"):  # an EM method has no epochs
        sa.tl.lda(adata, method="classic", max_epochs=3, **FAST)
    with pytest.raises(ValueError, match=r"n_topics=1 .* an integer >= 2"):  # an InputError, a ValueError
        sa.tl.lda(adata, n_topics=1, **FAST)
    snap.assert_unchanged(adata)


BAD_CLASSIC_OPTIONS = [
    (dict(max_iter=1.5), r"max_iter=1.5 .* an integer >= 1"),
    (dict(max_iter=0), r"max_iter=0 .* an integer >= 1"),
    (dict(max_iter=True), r"max_iter=True .* an integer >= 1"),
    (dict(max_doc_update_iter=0), r"max_doc_update_iter=0 .* an integer >= 1"),
    (dict(fit_doc_update_iter=2.0), r"fit_doc_update_iter=2.0 .* an integer >= 1"),
    (dict(mean_change_tol=-1e-3), r"mean_change_tol=-0.001 .* a finite number >= 0"),
    (dict(mean_change_tol=float("nan")), r"mean_change_tol=nan .* a finite number >= 0"),
    (dict(mean_change_tol="1e-3"), r"mean_change_tol='1e-3' .* a finite number >= 0"),
    (dict(doc_topic_prior=0), r"doc_topic_prior=0 .* None or a finite number > 0"),
    (dict(doc_topic_prior=float("inf")), r"doc_topic_prior=inf .* None or a finite number > 0"),
    (dict(topic_word_prior="0.1"), r"topic_word_prior='0.1' .* None or a finite number > 0"),
    (dict(topic_word_prior=True), r"topic_word_prior=True .* None or a finite number > 0"),
    (dict(n_topics=1), r"n_topics=1 .* an integer >= 2"),
    (dict(n_topics=3.0), r"n_topics=3.0 .* an integer >= 2"),
]


BAD_PRODLDA_OPTIONS = [
    (dict(n_topics=1), r"n_topics=1 .* an integer >= 2"),
    (dict(n_topics=3.0), r"n_topics=3.0 .* an integer >= 2"),
    (dict(n_hidden=0), r"n_hidden=0 .* an integer >= 1"),
    (dict(n_hidden=64.5), r"n_hidden=64.5 .* an integer >= 1"),
    (dict(n_hidden=True), r"n_hidden=True .* an integer >= 1"),
    (dict(topic_prior=0), r"topic_prior=0 .* a finite number > 0"),
    (dict(topic_prior=float("nan")), r"topic_prior=nan .* a finite number > 0"),
    (dict(topic_prior="1"), r"topic_prior='1' .* a finite number > 0"),
    (dict(mmd_weight=-1), r"mmd_weight=-1 .* a finite number >= 0"),
    (dict(mmd_weight=float("inf")), r"mmd_weight=inf .* a finite number >= 0"),
    (dict(mmd_mnn_k=-1), r"mmd_mnn_k=-1 .* an integer >= 0"),
    (dict(mmd_mnn_k=2.5), r"mmd_mnn_k=2.5 .* an integer >= 0"),
    (dict(mmd_mnn_k="auto"), r"mmd_mnn_k='auto' .* an integer >= 0"),
    (dict(encode_batch="no"), r"encode_batch='no' .* True or False"),
    (dict(batch_background=1), r"batch_background=1 .* True or False"),
]

# (method, extra keywords, the config that applies the same rules): tl.lda checks them before any read
_CONFIGS = {"classic": ({}, lambda n_genes, **kw: lda_vb.VBLDAConfig(n_genes=n_genes, **kw)),
            "prodlda": ({"batch_key": "batch"}, lambda n_genes, **kw: topic.TopicConfig(n_genes=n_genes, **kw))}


@pytest.mark.parametrize("method, kwargs, match",
                         [("classic", kw, m) for kw, m in BAD_CLASSIC_OPTIONS]
                         + [("prodlda", kw, m) for kw, m in BAD_PRODLDA_OPTIONS],
                         ids=lambda x: str(x) if isinstance(x, (str, dict)) else "")
def test_model_options_refused_before_any_read(cellbench_hvg, snapshot, monkeypatch, method, kwargs, match):
    """The configs checked them only once built, after the cells were read, with a ValueError
    (int() took 1.5 as 1; classic's mean_change_tol was not checked at all): tl.lda applies the
    config's rules to its keywords first."""
    from scgen_ae.spec import DataSpec

    monkeypatch.setattr(DataSpec, "learn", lambda *a, **k: pytest.fail("read the cells before checking"))
    adata = cellbench_hvg[:50].copy()
    snap = snapshot(adata)
    extra, config = _CONFIGS[method]
    with pytest.raises(sa.InputError, match=match) as info:
        sa.tl.lda(adata, method=method, **extra, **{"n_topics": 3, **FAST, **kwargs})
    snap.assert_unchanged(adata)
    assert f"(a keyword of sa.tl.lda(method='{method}')) is invalid" in str(info.value)
    assert "To fix it" in str(info.value)
    with pytest.raises(sa.InputError, match=match):  # the config refuses by the same rules
        config(adata.n_vars, **{"n_topics": 3, **kwargs})


def test_classic_option_on_a_backed_file_refused_before_reading_it(cellbench_file, monkeypatch):
    path, digest = cellbench_file
    monkeypatch.setattr(ondisk.OnDiskCellData, "read_span", lambda *a, **k: pytest.fail("read X before refusing"))
    backed = ad.read_h5ad(path, backed="r")
    obsm, uns = set(backed.obsm), set(backed.uns)
    with pytest.raises(sa.InputError, match=r"mean_change_tol=-1 .* a finite number >= 0"):
        sa.tl.lda(backed, method="classic", n_topics=3, mean_change_tol=-1, **FAST)
    assert (set(backed.obsm), set(backed.uns)) == (obsm, uns)
    backed.file.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_log_normalised_input_refused(cellbench_3protocols, snapshot):
    adata = cellbench_3protocols.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    snap = snapshot(adata)
    for method in ("prodlda", "classic"):
        with pytest.raises(sa.InputError, match="non-integer values"):
            sa.tl.lda(adata, method=method, **FAST)
    snap.assert_unchanged(adata)


def test_unseen_batch_refused_on_transform(lda_batch):
    adata, model = lda_batch
    new = adata[:20].copy()
    new.obs["batch"] = pd.Categorical(["other-protocol"] * 20)
    with pytest.raises(sa.InputError, match="not trained on"):
        model.transform(new)


# ---------------------------------------------------------------- plots

def test_pl_topics_reads_loadings_of_lda_and_nmf_alike(lda_classic):
    adata, _ = lda_classic
    fig = sa.pl.topics(adata, return_fig=True, key="lda", n_genes=5)
    assert sum(ax.has_data() for ax in fig.axes) == 6
    table = sa.pl.top_genes(adata, key="lda", n_genes=5)
    loadings = adata.varm["lda_topics"]
    for j in range(6):
        assert table[f"topic {j}"][0] == adata.var_names[int(np.argmax(loadings[:, j]))]
    # tl.nmf's layout: varm["nmf_loadings"] named by uns["nmf"]["varm_key"]
    nmf_like = adata.copy()
    nmf_like.varm["nmf_loadings"] = np.asarray(loadings[:, :3])
    nmf_like.uns["nmf"] = {"varm_key": "nmf_loadings", "key_added": "X_nmf"}
    fig = sa.pl.topics(nmf_like, return_fig=True, key="nmf", n_genes=4, topics=[0, 2])
    assert sum(ax.has_data() for ax in fig.axes) == 2
    with pytest.raises(KeyError, match="holds no 'varm_key'"):
        sa.pl.topics(adata, key="vae")
    with pytest.raises(ValueError, match="choose among 0..5"):
        sa.pl.topics(adata, key="lda", topics=[6])


# ---------------------------------------------------------------- CLI

def test_cli_integrate_with_lda(tmp_path, capsys):
    import anndata as ad

    from scgen_ae.cli import main

    src = sa.datasets.find("cellbench_3cl_3protocols_800genes")
    out = tmp_path / "out.h5ad"
    rc = main(["integrate", str(src), "--batch-key", "batch", "--label-key", "cell_type", "--model", "lda",
               "--n-latent", "5", "--max-epochs", "5", "--threads", "1", "--quiet", "-o", str(out)])
    assert rc == 0
    assert "training tl.lda" in capsys.readouterr().out
    result = ad.read_h5ad(out)
    assert result.obsm["X_lda"].shape == (result.n_obs, 5)
    assert result.varm["lda_topics"].shape == (result.n_vars, 5)
