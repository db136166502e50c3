"""A likelihood defined in this file only trains and decodes through tl.vae, tl.denoise,
the scvi-tools names and the command line: adding one needs no edit anywhere else
(the registry of :mod:`scgen_ae.likelihoods` is the only list of them)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import scgen_ae as sa
from scgen_ae import likelihoods as L
from scgen_ae.cli import main as cli_main

from .conftest import FAST, fit_copy

TINY = dict(batch_key="batch", n_latent=4, n_hidden=32, max_epochs=2, **FAST)
THETA = 10.0


@pytest.fixture(scope="module", autouse=True)
def _fixed_theta_nb():
    """Defines (so registers) the toy for this file's tests, and takes it out after them:
    the other test files see the built-in likelihoods only."""

    class FixedThetaNB(L.NB):
        """A negative binomial with theta fixed at 10 for every gene: nothing to learn about
        the dispersion, so the model's dispersion table is left alone."""

        name = "nb_theta10"
        uses_dispersion = False
        scvi_name = None

        def params(self, expression, log_library, heads, log_dispersion, dispersion_row):
            n, g = expression.shape
            return {"log_scale": expression, "log_mu": expression + log_library,
                    "log_theta": torch.full((1, g), math.log(THETA), device=expression.device),
                    "theta_row": torch.zeros(n, dtype=torch.long, device=expression.device)}

    yield FixedThetaNB
    L._REGISTRY.pop(FixedThetaNB.name, None)


def test_the_toy_is_registered_as_a_count_likelihood():
    assert L.get_likelihood("nb_theta10").counts
    assert "nb_theta10" in L.likelihood_names(counts=True)
    assert "nb_theta10" in L.COUNT_LIKELIHOODS and "nb_theta10" in L.LIKELIHOODS


def test_vae_trains_and_decodes_with_the_toy(sim):
    adata, model = fit_copy(sa.tl.vae, sim, likelihood="nb_theta10", **TINY)
    assert model.config.likelihood == "nb_theta10"
    assert np.isfinite(model.history["train_loss"]).all() and len(model.history["train_loss"]) == 2
    assert adata.obsm["X_vae"].shape == (sim.n_obs, 4)
    # theta is the toy's: the unused dispersion table never received a gradient
    assert torch.count_nonzero(model.module.log_dispersion) == 0
    norm = model.get_normalized_expression(adata, return_numpy=True)
    np.testing.assert_allclose(norm.sum(1), 1e4, rtol=1e-3)
    draws = model.posterior_predictive_sample(adata, seed=0)
    assert draws.shape == sim.shape and (draws >= 0).all()
    assert np.isfinite(model.get_elbo(adata))


def test_denoise_trains_with_the_toy(sim):
    adata, model = fit_copy(sa.tl.denoise, sim, likelihood="nb_theta10", **TINY)
    assert model.config.likelihood == "nb_theta10"
    assert np.isfinite(adata.layers["denoised"]).all()
    lp = model.entry_log_prob(adata, [0, 1, 2], [0, 1, 2], [0.0, 1.0, 5.0])
    assert np.isfinite(lp).all() and (lp < 0).all()
    with pytest.raises(ValueError, match="FixedThetaNB has no dispersion"):
        sa.tl.denoise(sim, likelihood="nb_theta10", return_info=True, **TINY)


def test_saved_toy_model_loads(sim, tmp_path):
    _, model = fit_copy(sa.tl.vae, sim, likelihood="nb_theta10", **TINY)
    again = sa.VAE.load(model.save(tmp_path / "toy"))
    assert again.module.likelihood is L.get_likelihood("nb_theta10")
    np.testing.assert_allclose(again.get_latent(sim), model.get_latent(sim), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("command", ["integrate", "denoise"])
def test_the_command_line_offers_the_toy(command, capsys):
    try:
        cli_main([command, "--help"])
    except SystemExit:  # argparse's exit after the help, where main lets it through
        pass
    assert "nb_theta10" in capsys.readouterr().out
