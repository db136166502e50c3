"""The likelihood objects' contracts (per-cell = summed per-entry, means, clear errors), the
LossRecord every module returns, the per-term history it fills, early stopping without a
KL warm-up, and pl.history's terms panel."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.special import gammaln

import scgen_ae as sa
from scgen_ae import likelihoods as L
from scgen_ae.io import read_model_file, write_model_file
from scgen_ae.losses import LossRecord
from scgen_ae.models.dae import DAEConfig
from scgen_ae.models.vae import VAEConfig
from scgen_ae.train import History

from .conftest import FAST, fit_copy

BUILT_IN = ("zinb", "nb", "poisson", "gaussian")
TINY = dict(batch_key="batch", n_latent=4, n_hidden=32, **FAST)


# ---------------------------------------------------------------- likelihood objects

def _minibatch(x: np.ndarray, counts: bool) -> L.Minibatch:
    r, c = np.nonzero(x)
    return L.Minibatch(
        x=torch.as_tensor(np.log1p(x) if counts else x), batch=torch.zeros(len(x), dtype=torch.long),
        log_library=torch.as_tensor(np.log(np.maximum(x.sum(1), 1.0)))[:, None],
        nz_row=torch.as_tensor(r), nz_col=torch.as_tensor(c), nz_val=torch.as_tensor(x[r, c]),
        log_x_factorial=torch.as_tensor(gammaln(x + 1).sum(1)))


def _decoder_params(lik, x, rng, per_batch: bool):
    """The likelihood's parameters from random decoder outputs, through its own ``params``."""
    n, g = x.shape
    head = torch.as_tensor(rng.normal(0.0, 1.5, (n, g)))
    expression = F.log_softmax(head, dim=-1) if lik.counts else head
    heads = {name: torch.as_tensor(rng.normal(0.0, 2.0, (n, g))) for name in lik.extra_heads}
    table = torch.as_tensor(rng.normal(0.0, 1.0, (3 if per_batch else 1, g)))
    row = torch.as_tensor(np.arange(n) % 3) if per_batch else None
    log_library = torch.as_tensor(np.log(np.maximum(x.sum(1), 1.0)))[:, None]
    return lik.params(expression, log_library, heads, table, row)


@pytest.mark.parametrize("per_batch", [False, True], ids=["one-row", "per-batch"])
@pytest.mark.parametrize("name", BUILT_IN)
def test_cell_log_prob_is_the_sum_of_entry_log_probs(name, per_batch):
    lik = L.get_likelihood(name)
    rng = np.random.default_rng(0)
    x = rng.poisson(rng.lognormal(0.0, 1.0, (12, 20))).astype(np.float64)
    x[rng.random(x.shape) < 0.4] = 0.0
    x[2] = 0.0  # an empty cell
    if not lik.counts:
        x = rng.normal(0.0, 1.0, x.shape)
    params = _decoder_params(lik, x, rng, per_batch)
    rows, cols = (torch.as_tensor(a.ravel()) for a in np.indices(x.shape))
    dense = lik.entry_log_prob(torch.as_tensor(x.ravel()), params, rows, cols).reshape(x.shape).sum(-1)
    got = lik.cell_log_prob(_minibatch(x, lik.counts), params)
    torch.testing.assert_close(got, dense, rtol=1e-10, atol=1e-8)
    # the module-level function is the same object's method
    torch.testing.assert_close(L.cell_log_prob(name, _minibatch(x, lik.counts), params), got)


@pytest.mark.parametrize("name", BUILT_IN)
def test_expectations(name):
    lik = L.get_likelihood(name)
    rng = np.random.default_rng(1)
    params = _decoder_params(lik, np.ones((5, 6)), rng, per_batch=False)
    if not lik.counts:
        torch.testing.assert_close(lik.mean(params), params["mean"])
        torch.testing.assert_close(lik.expression(params, 1e4), params["mean"])
        return
    mu = params["log_mu"].exp()
    torch.testing.assert_close(lik.expression(params), mu)
    torch.testing.assert_close(lik.expression(params, 100.0), params["log_scale"].exp() * 100.0)
    # E[x] of the zero-inflated model leaves the dropout out; of the others it is mu
    expected = mu * (1 - torch.sigmoid(params["zi_logits"])) if name == "zinb" else mu
    torch.testing.assert_close(lik.mean(params), expected)


def test_samples_follow_the_mean():
    rng = np.random.default_rng(2)
    gen = torch.Generator().manual_seed(0)
    for name in BUILT_IN:
        lik = L.get_likelihood(name)
        params = _decoder_params(lik, np.full((4000, 3), 50.0), rng, per_batch=False)
        params = {k: (v[:1].expand(4000, -1) if k in ("log_mu", "log_scale", "zi_logits", "mean") else v)
                  for k, v in params.items()}
        draws = lik.sample(params, gen)
        assert draws.shape == (4000, 3)
        np.testing.assert_allclose(draws.mean(0).numpy(), lik.mean(params)[0].numpy(), rtol=0.15, atol=0.3)


def test_registry_and_names():
    assert L.likelihood_names()[:4] == L.LIKELIHOODS[:4] == BUILT_IN  # first, whatever a test file adds
    assert L.COUNT_LIKELIHOODS[:3] == BUILT_IN[:3] and "gaussian" not in L.COUNT_LIKELIHOODS
    assert [L.get_likelihood(n).scvi_name for n in BUILT_IN] == ["zinb", "nb", "poisson", None]
    assert L.get_likelihood("zinb").extra_heads == ("dropout",)
    assert not L.get_likelihood("poisson").uses_dispersion
    with pytest.raises(ValueError, match="name 'nb' is taken"):
        type("OtherNB", (L.Poisson,), {"name": "nb"})


@pytest.mark.parametrize("name", ["zip", "ZINB", "", None, 3])
def test_unknown_likelihood_names_are_refused(name):
    with pytest.raises(ValueError, match=r"is not a registered likelihood; choose one of \('zinb', 'nb'"):
        L.get_likelihood(name)
    with pytest.raises(ValueError, match="not a registered likelihood"):
        VAEConfig(n_genes=5, likelihood=name)
    with pytest.raises(ValueError, match="not a registered likelihood"):
        DAEConfig(n_genes=5, likelihood=name)


def test_no_front_falls_back_to_zinb(sim):
    for front in (sa.tl.vae, sa.tl.denoise):
        with pytest.raises(ValueError, match="likelihood='zip' is not a registered likelihood"):
            front(sim, likelihood="zip", max_epochs=1, **TINY)
    with pytest.raises(ValueError, match="the denoiser models counts"):
        DAEConfig(n_genes=5, likelihood="gaussian")


# ---------------------------------------------------------------- the loss record

def test_loss_record_defaults_and_reserved_names():
    one = torch.tensor(1.0)
    rec = LossRecord(total=one, reconstruction=one)
    assert rec.monitor is one and rec.kl is None and rec.terms() == {"reconstruction": one}
    rec = LossRecord(total=one, reconstruction=one, kl=one, penalties={"alignment": one}, monitor=one * 2)
    assert list(rec.terms()) == ["reconstruction", "kl", "alignment"] and float(rec.monitor) == 2.0
    with pytest.raises(ValueError, match="reserved"):
        LossRecord(total=one, reconstruction=one, penalties={"kl": one})


def test_every_module_returns_a_record(sim):
    data = sa.tl._common.training_data(sim, None, "batch", "zinb")[0]
    mb = data.minibatch(np.arange(64))
    modules = [sa.models.vae.VAEModule(VAEConfig(n_genes=sim.n_vars, n_batches=2, n_latent=3)),
               sa.models.dae.DAEModule(DAEConfig(n_genes=sim.n_vars, n_batches=2)),
               sa.models.topic.TopicModule(sa.models.topic.TopicConfig(n_genes=sim.n_vars, n_batches=2))]
    from scgen_ae.models._surgery import _NewRowsOnly

    modules.append(_NewRowsOnly(modules[0]))
    for module in modules:
        rec = module.train().loss(mb, 0.5)
        assert isinstance(rec, LossRecord), type(module).__name__
        assert (rec.kl is None) == (not module.has_kl)
        assert torch.isfinite(rec.total) and rec.total.requires_grad
    vae_rec = modules[0].train().loss(mb, 0.5)
    assert set(vae_rec.penalties) == {"alignment"}  # two batches: the alignment penalty is on
    assert modules[0].eval().loss(mb).penalties == {}  # evaluation: the plain negative ELBO


def test_history_terms_sum_to_the_total(sim, tmp_path):
    adata, model = fit_copy(sa.tl.vae, sim, max_epochs=4, kl_warmup_epochs=3, early_stopping=False, beta=0.7, **TINY)
    h = model.history
    for key in ("train_reconstruction", "train_kl", "train_alignment", "validation_reconstruction",
                "validation_kl"):
        assert len(h[key]) == 4, key
    assert "validation_alignment" not in h  # a training term only
    weight = 0.7 * np.asarray(h["kl_weight"])
    np.testing.assert_allclose(h["train_loss"], h["train_reconstruction"] + weight * h["train_kl"]
                               + h["train_alignment"], rtol=1e-5)
    np.testing.assert_allclose(h["validation_loss"], h["validation_reconstruction"] + 0.7 * h["validation_kl"],
                               rtol=1e-5)
    # carried by uns and by the model file
    assert "train_kl" in adata.uns["vae"]["history"]
    again = sa.VAE.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(again.history["train_alignment"], h["train_alignment"])


def test_dae_and_topic_histories(sim):
    _, dae = fit_copy(sa.tl.denoise, sim, max_epochs=2, **TINY)
    assert "train_kl" not in dae.history
    np.testing.assert_allclose(dae.history["train_reconstruction"], dae.history["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(dae.history["validation_reconstruction"], dae.history["validation_loss"], rtol=1e-6)
    _, lda = fit_copy(sa.tl.lda, sim, n_topics=3, n_hidden=16, max_epochs=2, batch_key="batch", **FAST)
    assert {"train_reconstruction", "train_kl", "train_alignment"} <= set(lda.history)


def test_history_restore_round_trip():
    h = History()
    h.train_loss.append(3.0)
    h.add_terms("train", {"reconstruction": 2.0, "kl": 1.0}, 1)
    h.train_loss.append(2.5)
    h.add_terms("train", {"reconstruction": 1.5, "alignment": 0.2}, 2)  # kl absent, alignment new
    assert h.terms == {"train_reconstruction": [2.0, 1.5], "train_kl": [1.0, 0.0], "train_alignment": [0.0, 0.2]}
    record = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in h.as_dict().items()}
    again = History()
    again.restore(record)
    assert again.as_dict().keys() == h.as_dict().keys() and again.terms == h.terms


# ---------------------------------------------------------------- early stopping without a KL term

def test_model_without_kl_stops_without_a_warm_up(sim):
    # min_delta so large that no epoch improves on the first: stop after patience epochs
    stop = dict(max_epochs=20, patience=2, min_delta=1e9, **TINY)
    _, dae = fit_copy(sa.tl.denoise, sim, kl_warmup_epochs=10, **stop)
    assert dae.history["stopped_early"] and len(dae.history["train_loss"]) == 3
    assert dae.history["best_epoch"] == 0
    np.testing.assert_array_equal(dae.history["kl_weight"], 1.0)
    # a VAE with the same options waits for its warm-up to end before comparing
    _, vae = fit_copy(sa.tl.vae, sim, kl_warmup_epochs=5, **stop)
    assert vae.history["stopped_early"] and len(vae.history["train_loss"]) == 7
    assert vae.history["best_epoch"] == 4


# ---------------------------------------------------------------- old files and the figure

def test_model_file_without_term_history_loads(trained_sim, tmp_path):
    _, model = trained_sim
    path = model.save(tmp_path / "new")
    header, arrays = read_model_file(path)
    header["history"] = {k: v for k, v in header["history"].items()
                         if k in ("train_loss", "validation_loss", "kl_weight", "best_epoch", "stopped_early",
                                  "interrupted", "seconds")}
    old = sa.VAE.load(write_model_file(tmp_path / "old", header, arrays))
    assert "train_reconstruction" not in old.history
    np.testing.assert_array_equal(old.history["train_loss"], model.history["train_loss"])
    assert sa.pl.history(old, return_fig=True) is not None
    with pytest.raises(sa.InputError, match="records no loss terms"):
        sa.pl.history(old, terms=True, return_fig=True)


def test_pl_history_draws_the_terms(trained_sim):
    adata, model = trained_sim
    fig = sa.pl.history(adata, terms=True, return_fig=True)
    assert len(fig.axes) == 2
    labels = [line.get_label() for line in fig.axes[1].get_lines()]
    assert {"reconstruction (train)", "kl (train)", "reconstruction (validation)", "alignment (train)"} <= set(labels)
    fig = sa.pl.history(model, terms=["kl"], return_fig=True)
    assert [line.get_label() for line in fig.axes[1].get_lines()] == ["kl (train)", "kl (validation)"]
    assert len(sa.pl.history(model, return_fig=True).axes) == 1
    for bad in (["klx"], "recon", []):
        with pytest.raises(sa.InputError, match="names no recorded loss term"):
            sa.pl.history(model, terms=bad, return_fig=True)
