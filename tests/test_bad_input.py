"""Bad input refused up front with a precise message, and nothing of the caller's changed:
training options, duplicate genes, a model applied to other genes, plot arguments, model
files, the command line, non-.h5ad files, overwritten keys, advice that applies."""
from __future__ import annotations

import hashlib
import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

import scgen_ae as sa
from scgen_ae import io as sio
from scgen_ae.cli import main
from scgen_ae.tl._common import write_results

from .conftest import FAST

TINY = dict(n_latent=4, n_hidden=16, max_epochs=1, **FAST)


def _refused(fn, adata, snapshot, match, exc=sa.InputError, **kwargs):
    """``fn(adata, **kwargs)`` raises ``exc`` matching ``match`` and leaves ``adata`` as it was."""
    snap = snapshot(adata)
    with pytest.raises(exc, match=match) as info:
        fn(adata, **kwargs)
    snap.assert_unchanged(adata)
    return str(info.value)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- 1. training options

BAD_OPTIONS = [
    ({"max_epochs": 0}, r"max_epochs=0 .* must be an integer >= 1"),
    ({"max_epochs": -3}, r"max_epochs=-3 .* must be an integer >= 1"),
    ({"validation_fraction": 1.0}, r"validation_fraction=1.0 .* 0 <= validation_fraction < 1"),
    ({"validation_fraction": -0.2}, r"validation_fraction=-0.2 .* 0 <= validation_fraction < 1"),
    ({"lr": 0.0}, r"lr=0.0 .* a learning rate > 0"),
    ({"lr": -1e-3}, r"lr=-0.001 .* a learning rate > 0"),
    ({"batch_size": 1}, r"batch_size=1 .* an integer >= 2"),
    ({"batch_size": 0}, r"batch_size=0 .* an integer >= 2"),
]


@pytest.mark.parametrize("front", ["vae", "denoise", "lda"])
@pytest.mark.parametrize("options, match", BAD_OPTIONS)
def test_training_options_refused_by_every_front(sim, snapshot, front, options, match):
    fn = {"vae": sa.tl.vae, "denoise": sa.tl.denoise, "lda": sa.tl.lda}[front]
    arch = {"lda": dict(n_topics=3, n_hidden=16)}.get(front, dict(n_latent=4, n_hidden=16))
    msg = _refused(fn, sim, snapshot, match, **arch, **FAST, **options)
    assert "Training option" in msg and "To fix it" in msg  # what, where (the option) and how to fix


@pytest.mark.parametrize("options, match", BAD_OPTIONS)
def test_training_options_refused_by_map_query(trained_sim, sim, snapshot, options, match):
    _, model = trained_sim
    query = sim[:40].copy()
    query.obs["batch"] = "new"
    _refused(model.map_query, query, snapshot, match, batch_key="batch", **FAST, **options)


def test_train_config_itself_refuses():
    with pytest.raises(sa.InputError, match=r"lr=0 .* a learning rate > 0"):
        sa.TrainConfig(lr=0)
    assert sa.TrainConfig(max_epochs=None, validation_fraction=0.0).validation_fraction == 0.0  # 0: no validation


PROGRESS_FRONTS = {
    "vae": lambda a, **kw: sa.tl.vae(a, n_latent=4, n_hidden=16, **kw),
    "vae scvi-tools": lambda a, **kw: sa.tl.vae(a, n_latent=4, backend="scvi-tools", **kw),
    "denoise": lambda a, **kw: sa.tl.denoise(a, n_latent=4, n_hidden=16, **kw),
    "denoise vae": lambda a, **kw: sa.tl.denoise(a, method="vae", n_latent=4, n_hidden=16, **kw),
    "lda": lambda a, **kw: sa.tl.lda(a, n_topics=3, n_hidden=16, **kw),
    "lda classic": lambda a, **kw: sa.tl.lda(a, n_topics=3, method="classic", **kw),
    "lda scvi-tools": lambda a, **kw: sa.tl.lda(a, n_topics=3, backend="scvi-tools", **kw),
    "nmf": lambda a, **kw: sa.tl.nmf(a, n_components=3, **kw),
}


@pytest.mark.parametrize("front", list(PROGRESS_FRONTS))
@pytest.mark.parametrize("progress", ["no", 1, None])
def test_progress_that_is_not_a_bool_is_refused_before_any_work(sim, snapshot, monkeypatch, front, progress):
    """progress="no" is truthy: taken as it is, it would draw the bar it seems to turn off.
    Every front taking progress refuses it before reading a cell (scvi-tools' backends too)."""
    from scgen_ae.spec import DataSpec

    def no_work(*args, **kwargs):
        raise AssertionError("the cells were read before progress was checked")

    monkeypatch.setattr(DataSpec, "learn", no_work)
    msg = _refused(PROGRESS_FRONTS[front], sim, snapshot, rf"progress={progress!r} .* must be True or False",
                   n_threads=1, progress=progress)
    assert "pass progress=False" in msg and "--quiet on the command line" in msg


def test_progress_accepts_numpy_bools():
    assert sa.TrainConfig(progress=np.False_).progress is np.False_


OWN_ARGUMENT_FRONTS = {  # fronts that take training options without building a TrainConfig from them
    "nmf": lambda a, **kw: sa.tl.nmf(a, n_components=3, **kw),
    "lda scvi-tools": lambda a, **kw: sa.tl.lda(a, n_topics=3, backend="scvi-tools", **kw),
}
BAD_OWN_OPTIONS = [
    ({"seed": -1}, r"seed=-1 .* must be an integer >= 0", "--seed on the command line"),
    ({"seed": 1.5}, r"seed=1.5 .* must be an integer >= 0", "pass e.g. seed=0"),
    ({"seed": "0"}, r"seed='0' .* must be an integer >= 0", "pass e.g. seed=0"),
    ({"n_threads": 0}, r"n_threads=0 .* must be None or an integer >= 1", "--threads on the command line"),
    ({"n_threads": 2.0}, r"n_threads=2.0 .* must be None or an integer >= 1", "n_threads=None"),
    ({"device": "gpu"}, r"device='gpu' is not a device name", "'auto', 'cpu'"),
]


@pytest.mark.parametrize("front", list(OWN_ARGUMENT_FRONTS))
@pytest.mark.parametrize("options, match, fix", BAD_OWN_OPTIONS)
def test_own_argument_training_options_refused_before_any_work(sim, snapshot, monkeypatch, front, options, match,
                                                               fix):
    """tl.nmf's seed / n_threads / device are its own arguments, and tl.lda hands its options to
    scvi-tools as they are: the shared rules apply all the same (n_threads=0 meant every core,
    seed=1.5 seed 1), before a cell is read."""
    from scgen_ae.spec import DataSpec

    def no_work(*args, **kwargs):
        raise AssertionError("the cells were read before the options were checked")

    monkeypatch.setattr(DataSpec, "learn", no_work)
    kwargs = {"n_threads": 1, "progress": False, **options}
    msg = _refused(OWN_ARGUMENT_FRONTS[front], sim, snapshot, match, **kwargs)
    assert fix in msg


BAD_SWITCHES = [
    ({"early_stopping": "no"}, r"early_stopping='no' .* must be True or False", "early_stopping=False"),
    ({"early_stopping": 0}, r"early_stopping=0 .* must be True or False", "early_stopping=False"),
    ({"early_stopping": None}, r"early_stopping=None .* must be True or False", "early_stopping=False"),
    ({"resume": "no"}, r"resume='no' .* must be True or False", "resume=False"),
    ({"resume": 1, "checkpoint_path": "run.npz"}, r"resume=1 .* must be True or False", "resume=False"),
    ({"checkpoint_path": 5}, r"checkpoint_path=5 .* must be None or the path of a file", "checkpoint_path=None"),
    ({"checkpoint_path": ""}, r"checkpoint_path='' .* must be None or the path of a file", "checkpoint_path=None"),
    ({"checkpoint_path": b"run.npz"}, r"checkpoint_path=b'run.npz' .* must be None or the path", "'run.npz'"),
    ({"resume": True}, r"resume=True needs checkpoint_path= .* checkpoint_path is None", "resume=False"),
]


@pytest.mark.parametrize("options, match, fix", BAD_SWITCHES)
def test_switches_and_checkpoint_path_refused_before_any_work(sim, snapshot, monkeypatch, tmp_path, options, match,
                                                              fix):
    """A truthy "no" would stop early (or resume) where it seems to say not to; a checkpoint_path
    that names no file failed only when the first checkpoint was written, after an epoch."""
    from scgen_ae.spec import DataSpec

    def no_work(*args, **kwargs):
        raise AssertionError("the cells were read before the options were checked")

    monkeypatch.setattr(DataSpec, "learn", no_work)
    monkeypatch.chdir(tmp_path)  # nothing may be written, not even a checkpoint in the working folder
    with pytest.raises(sa.InputError, match=match):
        sa.TrainConfig(**options)
    msg = _refused(sa.tl.vae, sim, snapshot, match, n_latent=4, n_hidden=16, **FAST, **options)
    assert "To fix it" in msg and fix in msg
    assert not list(tmp_path.iterdir())


def test_every_training_option_has_a_rule():
    """An option without a rule is taken as it comes (early_stopping="no" stopped early)."""
    import dataclasses

    from scgen_ae._validate import _TRAIN_RULES

    fields = {f.name for f in dataclasses.fields(sa.TrainConfig)}
    assert fields - {"device"} == set(_TRAIN_RULES)  # device: check_device, which asks torch


def test_switches_and_checkpoint_path_accept_their_types(tmp_path):
    assert sa.TrainConfig(early_stopping=np.False_, resume=np.True_, checkpoint_path=tmp_path / "run").resume
    assert sa.TrainConfig(checkpoint_path=str(tmp_path / "run.npz"), resume=False).checkpoint_path.endswith(".npz")
    assert sa.TrainConfig(resume=False, checkpoint_path=None).early_stopping is True  # the defaults


def _cells(n):
    X = np.random.default_rng(0).poisson(3.0, (n, 20)).astype(np.float32) + 1
    return ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
                      var=pd.DataFrame(index=[f"g{j}" for j in range(20)]))


def test_validation_fraction_leaving_too_few_training_cells(snapshot):
    msg = _refused(sa.tl.vae, _cells(10), snapshot, r"holds out 9 and leaves 1 to train on",
                   validation_fraction=0.9, **TINY)
    assert "at least 2" in msg and "smaller validation_fraction" in msg


def test_validation_fraction_holding_out_no_cell(snapshot):
    msg = _refused(sa.tl.vae, _cells(8), snapshot, r"validation_fraction=0.05 of 8 cells holds out no cell",
                   validation_fraction=0.05, **TINY)
    assert "validation_fraction=0" in msg


@pytest.mark.parametrize("n_latent", [0, 21])
def test_n_latent_must_fit_the_genes(snapshot, n_latent):
    msg = _refused(sa.tl.vae, _cells(30), snapshot, rf"n_latent={n_latent} is invalid for data with 20 genes",
                   **{**TINY, "n_latent": n_latent})
    assert "from 1 to 20" in msg


def test_n_latent_of_denoise_and_n_topics_of_lda(snapshot):
    _refused(sa.tl.denoise, _cells(30), snapshot, r"n_latent=25 is invalid for data with 20 genes",
             n_latent=25, max_epochs=1, **FAST)
    _refused(sa.tl.lda, _cells(30), snapshot, r"n_topics=21 is invalid for data with 20 genes",
             n_topics=21, max_epochs=1, **FAST)


# ---------------------------------------------------------------- 2. duplicate gene names

def _with_duplicates(adata):
    names = list(adata.var_names)
    names[5] = names[4]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's own "not unique" warning
        adata.var_names = names
    return adata


@pytest.mark.parametrize("fn, kwargs", [(sa.tl.vae, TINY), (sa.tl.denoise, TINY),
                                        (sa.tl.lda, dict(n_topics=3, max_epochs=1, **FAST)),
                                        (sa.tl.nmf, dict(n_components=3, max_iter=2))])
def test_duplicate_var_names_refused_at_training(sim, snapshot, fn, kwargs):
    dup = sim.var_names[4]
    msg = _refused(fn, _with_duplicates(sim), snapshot, r"adata.var_names has 1 duplicate gene names", **kwargs)
    assert repr(str(dup)) in msg and "adata.var_names_make_unique()" in msg


def test_duplicate_var_names_refused_when_applying(trained_sim, snapshot):
    adata, model = trained_sim
    bad = _with_duplicates(adata.copy())
    snap = snapshot(bad)
    with pytest.raises(sa.InputError, match=r"var_names_make_unique"):
        model.get_latent(bad)
    snap.assert_unchanged(bad)


# ---------------------------------------------------------------- 3. a model applied to other genes

@pytest.fixture(scope="module")
def subset_models(sim_session):
    """A VAE and a DAE trained on the first 100 genes of the simulated data."""
    sub = sim_session[:, :100].copy()
    vae = sa.tl.vae(sub.copy(), batch_key="batch", **TINY)
    dae = sa.tl.denoise(sub.copy(), batch_key="batch", **TINY)
    return vae, dae


@pytest.mark.parametrize("kind", [0, 1])
def test_denoise_with_model_of_fewer_genes_refused_before_any_write(sim, snapshot, subset_models, kind):
    model = subset_models[kind]
    msg = _refused(sa.tl.denoise, sim, snapshot, r"the model was trained on 100 of them", model=model)
    assert "genes=model.var_names" in msg and "adata[:, model.var_names]" in msg
    assert "X_vae" not in sim.obsm and "X_dae" not in sim.obsm


@pytest.mark.parametrize("kind", [0, 1])
def test_denoise_with_model_genes_to_obsm(sim, subset_models, kind):
    model = subset_models[kind]
    sa.tl.denoise(sim, model=model, genes=model.var_names)
    frame = sim.obsm["denoised"]
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == model.var_names
    assert frame.shape == (sim.n_obs, 100) and np.isfinite(frame.to_numpy()).all()
    assert "denoised" not in sim.layers


def test_denoise_with_model_genes_in_another_order(sim, subset_models):
    model = subset_models[1]
    ordered = sim[:, :100].copy()
    shuffled = ordered[:, ordered.var_names[::-1]].copy()
    sa.tl.denoise(ordered, model=model)
    sa.tl.denoise(shuffled, model=model)
    expected = pd.DataFrame(ordered.layers["denoised"], columns=ordered.var_names)[shuffled.var_names]
    np.testing.assert_allclose(shuffled.layers["denoised"], expected.to_numpy(), rtol=1e-5, atol=1e-5)


def test_denoise_genes_the_model_lacks(sim, snapshot, subset_models):
    _refused(sa.tl.denoise, sim, snapshot, r"genes= names 1 genes the model was not trained on",
             model=subset_models[1], genes=[sim.var_names[0], sim.var_names[120]])


def test_write_results_checks_every_shape_before_writing(sim, snapshot):
    snap = snapshot(sim)
    with pytest.raises(sa.InputError, match=r"adata.layers\['den'\] has shape \(240, 100\).*nothing was written"):
        write_results(sim, obsm={"X_ok": np.zeros((sim.n_obs, 3))}, layers={"den": np.zeros((sim.n_obs, 100))},
                      uns={"rec": {}})
    snap.assert_unchanged(sim)


# ---------------------------------------------------------------- 4. plot arguments

def test_latent_with_misspelt_color_computes_nothing(trained_sim, snapshot, monkeypatch):
    adata = trained_sim[0].copy()
    monkeypatch.setattr(sa.pl._embedding, "embed_2d", lambda *a, **k: pytest.fail("embedding computed"))
    msg = _refused(sa.pl.latent, adata, snapshot, r"color='batchh' is neither a column of adata.obs",
                   exc=KeyError, color=["batch", "batchh"], method="tsne")
    assert "'batch'" in msg  # lists the columns there are
    assert "X_vae_tsne" not in adata.obsm and "embeddings" not in adata.uns


def test_latent_bad_method_and_basis_computes_nothing(trained_sim, snapshot, monkeypatch):
    adata = trained_sim[0].copy()
    monkeypatch.setattr(sa.pl._embedding, "embed_2d", lambda *a, **k: pytest.fail("embedding computed"))
    _refused(sa.pl.latent, adata, snapshot, r"method='pca'; choose 'umap' or 'tsne'", color="batch", method="pca")
    err = _refused(sa.pl.latent, adata, snapshot, r"basis='X_nope' is not in adata.obsm", exc=sa.InputError,
                   basis="X_nope")
    assert "X_vae" in err


def test_report_with_misspelt_color_computes_nothing(trained_sim, snapshot, monkeypatch):
    adata = trained_sim[0].copy()
    monkeypatch.setattr(sa.pl._embedding, "embed_2d", lambda *a, **k: pytest.fail("embedding computed"))
    _refused(sa.pl.report, adata, snapshot, r"color='typo'", exc=KeyError, key="vae", color="typo")


def test_history_missing_key_lists_the_keys_there_are(trained_sim, snapshot):
    adata = trained_sim[0].copy()
    msg = _refused(sa.pl.history, adata, snapshot, r"adata.uns\['nmf'\] holds no training history", exc=KeyError,
                   key="nmf")
    assert "['vae']" in msg and isinstance(msg, str)


# ---------------------------------------------------------------- 5. model files

@pytest.mark.parametrize("name", ["run_1.5", "model.pt", "a.b.c", "plain", "model.npz", "v1.0.npz.bak"])
def test_any_name_round_trips(trained_sim, tmp_path, name):
    adata, model = trained_sim
    written = model.save(tmp_path / name)
    assert written.exists() and written.name == (name if name.endswith(".npz") else name + ".npz")
    loaded = sa.VAE.load(tmp_path / name)
    np.testing.assert_array_equal(loaded.get_latent(adata), model.get_latent(adata))


def test_load_reads_what_save_wrote_not_a_namesake(trained_sim, tmp_path):
    _, model = trained_sim
    (tmp_path / "model.pt").write_bytes(b"a torch file, not ours")
    model.save(tmp_path / "model.pt")
    assert sa.VAE.load(tmp_path / "model.pt").var_names == model.var_names


def _arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _edited(saved, tmp_path, edit, name="edited.npz"):
    """A copy of ``saved`` whose header went through ``edit`` and was re-hashed (a consistent file)."""
    arrays = _arrays(saved)
    header = json.loads(arrays.pop("__header__").tobytes().decode())
    header.pop("sha256")
    header = edit(header) or header
    if isinstance(header, dict):
        header["sha256"] = sio._digest(header, arrays)
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


def _drop(key):
    return lambda h: h.pop(key) and None


def _set(key, value):
    return lambda h: h.__setitem__(key, value)


def _set_config(key, value):
    return lambda h: h["config"].__setitem__(key, value)


@pytest.mark.parametrize("edit, match", [
    (lambda h: h.__setitem__("var_names", h["var_names"][:-1]), r"lists \d+ var_names but the config has n_genes"),
    (lambda h: h.__setitem__("batch_categories", ["a"]), r"lists 1 batch_categories but the config has n_batches"),
    (_drop("layer"), r"has no 'layer' field"),
    (_drop("var_names"), r"has no 'var_names' field"),
    (_drop("config"), r"has no 'config' field"),
    (_set("var_names", "g1,g2"), r"var_names='g1,g2', but a list of strings is required"),
    (_set("var_names", [1, 2]), r"but a list of strings is required"),
    (_set("batch_categories", 3), r"batch_categories=3, but a list of strings"),
    (_set("history", []), r"history=\[\], but a dict"),
    (_set("config", [1, 2]), r"config=\[1, 2\], but a dict"),
    (_set("layer", 5), r"layer=5, but a str or NoneType"),
    (_set("model", 7), r"model=7, but a str"),
    (_set_config("n_latent", "8"), r"does not describe a valid VAE"),
    (_set_config("not_an_option", 1), r"does not describe a valid VAE.*not_an_option"),
    (_set_config("likelihood", "normal"), r"does not describe a valid VAE.*likelihood='normal'"),
    (_set("format_version", "1"), r"format_version='1'; an integer is required"),
    (lambda h: ["not", "an", "object"], r"is not a JSON object"),
])
def test_edited_header_is_a_model_file_error(saved_sim_model, tmp_path, edit, match):
    bad = _edited(saved_sim_model, tmp_path, edit)
    with pytest.raises(sa.ModelFileError, match=match):
        sa.VAE.load(bad)


@pytest.mark.parametrize("content, match", [
    (b"", r"not a readable scgen_ae model file"),
    (b"gene,count\nA,1\n", r"not a readable scgen_ae model file"),
])
def test_empty_and_text_files(tmp_path, content, match):
    path = tmp_path / "m.npz"
    path.write_bytes(content)
    with pytest.raises(sa.ModelFileError, match=match):
        sa.VAE.load(path)


def test_npy_file_is_refused(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.arange(10.0))
    with pytest.raises(sa.ModelFileError, match=r"single array \(.npy\), not an .npz archive"):
        sa.VAE.load(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_files(saved_sim_model, tmp_path, fraction):
    data = saved_sim_model.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(sa.ModelFileError, match=r"not a readable scgen_ae model file|Checksum"):
        sa.VAE.load(cut)


def test_checkpoint_path_without_suffix_resumes(sim, tmp_path):
    path = tmp_path / "run.1"  # written as run.1.npz: resume must find it under the same name
    opts = dict(batch_key="batch", n_latent=4, n_hidden=16, checkpoint_path=str(path), resume=True,
                early_stopping=False, **FAST)
    sa.tl.vae(sim.copy(), max_epochs=2, **opts)
    assert (tmp_path / "run.1.npz").exists()
    model = sa.tl.vae(sim.copy(), max_epochs=3, **opts)
    assert len(model.history["train_loss"]) == 3


def test_checkpoint_that_is_a_model_is_a_model_file_error(sim, saved_sim_model, snapshot):
    _refused(sa.tl.vae, sim, snapshot, r"is not a training checkpoint", exc=sa.ModelFileError,
             batch_key="batch", checkpoint_path=str(saved_sim_model), resume=True, **TINY)


# ---------------------------------------------------------------- 6. command line

@pytest.fixture
def h5ad(sim, tmp_path):
    path = tmp_path / "in.h5ad"
    sim.write_h5ad(path)
    return path


CLI_FAST = ["--batch-key", "batch", "--n-top-genes", "60", "--max-epochs", "1", "--threads", "1", "--quiet"]


@pytest.mark.parametrize("command", ["integrate", "denoise"])
def test_cli_refuses_to_write_over_its_input(h5ad, capsys, command):
    before = _digest(h5ad)
    args = CLI_FAST if command == "integrate" else CLI_FAST[:2] + CLI_FAST[4:]
    assert main([command, str(h5ad), "-o", str(h5ad), *args]) == 2
    err = capsys.readouterr()
    assert "-o/--output" in err.err and "is the input file" in err.err and "--force" in err.err
    assert "training" not in err.out  # refused before any work
    assert _digest(h5ad) == before


def test_cli_force_replaces_the_input_atomically(h5ad, sim):
    assert main(["integrate", str(h5ad), "-o", str(h5ad), "--force", *CLI_FAST]) == 0
    result = ad.read_h5ad(h5ad)
    assert result.n_vars == 150 and result.var["scgen_ae_model_gene"].sum() == 60 and "X_vae" in result.obsm
    assert sorted(p.name for p in h5ad.parent.iterdir()) == ["in.h5ad"]  # no temporary file left


@pytest.mark.parametrize("flag", ["-o", "--save-model"])
def test_cli_missing_output_folder_fails_before_training(h5ad, tmp_path, capsys, flag):
    target = tmp_path / "no" / "such" / "dir" / "out.h5ad"
    assert main(["integrate", str(h5ad), flag, str(target), *CLI_FAST]) == 2
    out = capsys.readouterr()
    assert "does not exist; create it first (mkdir -p" in out.err and "training" not in out.out
    assert not (tmp_path / "no").exists()


def test_cli_unwritable_output_fails_before_training(h5ad, tmp_path, capsys, monkeypatch):
    import scgen_ae.cli as cli

    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)  # as if the folder were read-only
    assert main(["integrate", str(h5ad), "-o", str(tmp_path / "out.h5ad"), *CLI_FAST]) == 2
    out = capsys.readouterr()
    assert "cannot be written (permission denied)" in out.err and "training" not in out.out


@pytest.mark.parametrize("command", ["integrate", "denoise", "score"])
def test_cli_refuses_non_h5ad_input(tmp_path, capsys, command):
    csv = tmp_path / "counts.csv"
    csv.write_text("cell,g1\nc1,3\n")
    extra = ["--bases", "X_pca"] if command == "score" else []
    assert main([command, str(csv), "--batch-key", "batch", *extra]) == 2
    assert "is not an .h5ad file" in capsys.readouterr().err
    fake = tmp_path / "fake.h5ad"
    fake.write_text("not hdf5")
    assert main([command, str(fake), "--batch-key", "batch", *extra]) == 2
    assert "is named .h5ad but is not an HDF5 file" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--max-epochs", "0", "argument --max-epochs: must be 1 or more, got 0"),
    ("--max-epochs", "-5", "argument --max-epochs: must be 1 or more, got -5"),
    ("--n-latent", "0", "argument --n-latent: must be 1 or more, got 0"),
    ("--n-top-genes", "-1", "argument --n-top-genes: must be 0 or more, got -1"),
    ("--threads", "0", "argument --threads: must be 1 or more, got 0"),
    ("--seed", "-1", "argument --seed: must be 0 or more, got -1"),
    ("--max-epochs", "ten", "argument --max-epochs: 'ten' is not a whole number"),
])
def test_cli_numeric_options(h5ad, capsys, flag, value, message):
    before = _digest(h5ad)
    assert main(["integrate", str(h5ad), "--batch-key", "batch", flag, value]) == 2
    assert message in capsys.readouterr().err
    assert _digest(h5ad) == before


def test_cli_max_epochs_zero_in_denoise(h5ad, capsys):
    assert main(["denoise", str(h5ad), "--max-epochs", "0"]) == 2
    assert "argument --max-epochs: must be 1 or more" in capsys.readouterr().err


# ---------------------------------------------------------------- 7. read_backed

def test_read_backed_non_h5ad_file(tmp_path):
    csv = tmp_path / "counts.csv"
    csv.write_text("cell,g1\nc1,3\n")
    with pytest.raises(sa.InputError, match=r"counts.csv' \(sa.read_backed\) is not an .h5ad file"):
        sa.read_backed(csv)
    fake = tmp_path / "fake.h5ad"
    fake.write_bytes(b"")
    with pytest.raises(sa.InputError, match=r"is named .h5ad but is not an HDF5 file"):
        sa.read_backed(fake)


def test_read_backed_folder_that_is_no_zarr_store(tmp_path):
    (tmp_path / "store").mkdir()
    with pytest.raises(sa.InputError, match=r"store"):
        sa.read_backed(tmp_path / "store")


# ---------------------------------------------------------------- 8. overwritten keys

def test_training_twice_warns_naming_each_replaced_key(sim):
    sa.tl.vae(sim, batch_key="batch", **TINY)
    with pytest.warns(UserWarning) as record:
        sa.tl.vae(sim, batch_key="batch", **TINY)
    messages = [str(w.message) for w in record]
    assert any("Replacing adata.obsm['X_vae'], adata.uns['vae'], which already existed" in m for m in messages)


@pytest.mark.parametrize("front", ["vae", "denoise", "nmf", "lda", "map_query"])
def test_replacing_warns_at_the_callers_line(sim, trained_sim, front):
    call = {"vae": lambda: sa.tl.vae(sim, **TINY), "denoise": lambda: sa.tl.denoise(sim, **TINY),
            "nmf": lambda: sa.tl.nmf(sim, n_components=3, max_iter=2, progress=False, n_threads=1),
            "lda": lambda: sa.tl.lda(sim, n_topics=3, max_epochs=1, **FAST),
            "map_query": lambda: trained_sim[1].map_query(sim, batch_key="batch", max_epochs=1, **FAST)}[front]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        call()
    with pytest.warns(UserWarning) as record:
        call()
    assert {w.filename for w in record if "Replacing" in str(w.message)} == {__file__}


def test_first_write_does_not_warn(sim):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        write_results(sim, obsm={"X_new": np.zeros((sim.n_obs, 2))}, obs={"new": np.zeros(sim.n_obs)})


def test_write_results_warns_for_obs_and_layers(sim):
    sim.obs["labels"] = "a"
    sim.layers["den"] = sim.X.copy()
    with pytest.warns(UserWarning) as record:
        write_results(sim, obs={"labels": np.ones(sim.n_obs)}, layers={"den": np.zeros(sim.shape)})
    messages = " ".join(str(w.message) for w in record)
    assert "adata.obs['labels']" in messages and "adata.layers['den']" in messages


def _embedded(sim):
    sim.obsm["X_vae"] = np.random.default_rng(0).normal(size=(sim.n_obs, 3))
    sim.obs["cell_type"] = sim.obs["group"].astype(str) if "group" in sim.obs else "a"
    return sim


def test_transfer_labels_refuses_to_replace_its_label_column(sim, snapshot):
    ref = _embedded(sim)
    query = ref[:50].copy()
    msg = _refused(sa.tl.transfer_labels, query, snapshot, r"key_added='cell_type' would replace the label column",
                   reference=ref, label_key="cell_type", key_added="cell_type")
    assert "cell_type_transferred" in msg


def test_transfer_labels_warns_when_replacing_its_previous_result(sim):
    ref = _embedded(sim)
    query = ref[:50].copy()
    sa.tl.transfer_labels(query, reference=ref, label_key="cell_type")
    with pytest.warns(UserWarning, match=r"Replacing adata.obs\['cell_type_transferred'\], "
                      r"adata.obs\['cell_type_transferred_uncertainty'\], "
                      r"adata.obsm\['cell_type_transferred_probabilities'\], adata.uns\['cell_type_transferred'\]"):
        sa.tl.transfer_labels(query, reference=ref, label_key="cell_type")


# ---------------------------------------------------------------- 9. advice that applies

def _log_normalised(adata):
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def test_lda_on_log_data_gives_advice_lda_takes(sim, snapshot):
    msg = _refused(sa.tl.lda, _log_normalised(sim), snapshot, r"but tl.lda \(a topic model of counts\) models raw "
                   "counts", n_topics=3, max_epochs=1, **FAST)
    assert "likelihood" not in msg and "layer='counts'" in msg


def test_nmf_transform_on_log_data_gives_advice_nmf_takes(sim, sim_session, snapshot):
    model = sa.tl.nmf(sim_session.copy(), n_components=3, max_iter=3)
    msg = _refused(model.transform, _log_normalised(sim), snapshot, r"but this NMF model \(fitted with "
                   r"transform='log1p'")
    assert "likelihood" not in msg and "transform='none'" in msg


def test_lda_model_transform_on_log_data(sim, sim_session, snapshot):
    model = sa.tl.lda(sim_session.copy(), n_topics=3, max_epochs=1, **FAST)
    msg = _refused(model.transform, _log_normalised(sim), snapshot, r"this topic model \(LDA\) models raw counts")
    assert "likelihood" not in msg


def test_denoise_on_log_data_offers_no_gaussian(sim, snapshot):
    msg = _refused(sa.tl.denoise, _log_normalised(sim), snapshot, r"likelihood='zinb' models raw counts", **TINY)
    assert "gaussian" not in msg


def test_vae_on_log_data_still_offers_gaussian(sim, snapshot):
    msg = _refused(sa.tl.vae, _log_normalised(sim), snapshot, r"likelihood='zinb' models raw counts", **TINY)
    assert "likelihood='gaussian'" in msg
