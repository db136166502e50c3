"""Likelihoods: element-wise densities against scipy.stats, and the sparse-aware per-cell
sum used in training against the dense reference (values and gradients)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy import stats
from scipy.special import expit, gammaln

from scgen_ae import likelihoods as L
from scgen_ae.data import CellData
from scgen_ae.likelihoods import Minibatch


def _params(rng, shape, zero_frac=0.5):
    """Random counts with zeros, means, dispersions and zero-inflation logits (float64)."""
    mu = rng.lognormal(0.0, 1.5, shape)
    theta = rng.lognormal(0.0, 1.5, shape)
    x = rng.poisson(rng.gamma(theta, mu / theta)).astype(np.float64)
    x[rng.random(shape) < zero_frac] = 0.0
    x.flat[:3] = [0.0, 1.0, 250.0]  # make sure zeros, ones and a large count appear
    zi = rng.normal(0.0, 2.0, shape)
    return x, mu, theta, zi


def _t(a):
    return torch.as_tensor(a, dtype=torch.float64)


# ---------------------------------------------------------------- element-wise vs scipy

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nb_log_prob_matches_scipy(seed):
    x, mu, theta, _ = _params(np.random.default_rng(seed), (40, 30))
    got = L.nb_log_prob(_t(x), _t(np.log(mu)), _t(np.log(theta))).numpy()
    want = stats.nbinom.logpmf(x, n=theta, p=theta / (theta + mu))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zinb_log_prob_matches_hand_mixture(seed):
    x, mu, theta, zi = _params(np.random.default_rng(seed), (40, 30))
    got = L.zinb_log_prob(_t(x), _t(np.log(mu)), _t(np.log(theta)), _t(zi)).numpy()
    pi = expit(zi)
    nb = stats.nbinom.pmf(x, n=theta, p=theta / (theta + mu))
    want = np.log(np.where(x == 0, pi + (1 - pi) * nb, (1 - pi) * nb))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8)


def test_zinb_extreme_logits_stay_finite():
    x = _t([[0.0, 3.0, 0.0, 7.0]])
    log_mu, log_theta = _t([[1.0, 1.0, 1.0, 1.0]]), _t([[0.5, 0.5, 0.5, 0.5]])
    for zi in (-60.0, 60.0):
        lp = L.zinb_log_prob(x, log_mu, log_theta, torch.full_like(x, zi))
        assert torch.isfinite(lp).all()
    # with pi -> 0 the ZINB is the NB
    lp = L.zinb_log_prob(x, log_mu, log_theta, torch.full_like(x, -60.0))
    torch.testing.assert_close(lp, L.nb_log_prob(x, log_mu, log_theta))


@pytest.mark.parametrize("seed", [0, 1])
def test_poisson_log_prob_matches_scipy(seed):
    x, mu, _, _ = _params(np.random.default_rng(seed), (40, 30))
    got = L.poisson_log_prob(_t(x), _t(np.log(mu))).numpy()
    np.testing.assert_allclose(got, stats.poisson.logpmf(x, mu), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_log_prob_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    x, mean, log_var = rng.normal(size=(3, 40, 30)) * [[[3.0]], [[3.0]], [[1.5]]]
    got = L.gaussian_log_prob(_t(x), _t(mean), _t(log_var)).numpy()
    want = stats.norm.logpdf(x, loc=mean, scale=np.sqrt(np.exp(log_var)))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_nb_large_theta_approaches_poisson():
    x = _t(np.arange(20.0))
    log_mu = torch.full_like(x, np.log(4.0))
    nb = L.nb_log_prob(x, log_mu, torch.full_like(x, np.log(1e7)))
    torch.testing.assert_close(nb, L.poisson_log_prob(x, log_mu), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- per-cell (sparse-aware) sum

def _minibatch(x: np.ndarray, likelihood: str = "zinb") -> Minibatch:
    """A Minibatch built by hand from a dense count matrix (independent of data.py).

    ``Minibatch.x`` is the encoder input (log1p of the counts for count likelihoods);
    the count likelihoods read the counts themselves from ``nz_*``.
    """
    r, c = np.nonzero(x)
    return Minibatch(
        x=torch.as_tensor(x if likelihood == "gaussian" else np.log1p(x), dtype=torch.float32),
        batch=torch.zeros(x.shape[0], dtype=torch.long),
        log_library=torch.as_tensor(np.log(np.maximum(x.sum(1), 1.0)), dtype=torch.float32)[:, None],
        nz_row=torch.as_tensor(r, dtype=torch.long),
        nz_col=torch.as_tensor(c, dtype=torch.long),
        nz_val=torch.as_tensor(x[r, c], dtype=torch.float32),
        log_x_factorial=torch.as_tensor(gammaln(x + 1).sum(1), dtype=torch.float32),
    )


def _counts(rng, n=24, g=35):
    x = rng.poisson(rng.lognormal(0.0, 1.2, (n, g))).astype(np.float32)
    x[rng.random((n, g)) < 0.4] = 0.0
    x[[0, 5, n - 1]] = 0.0  # all-zero rows, including the first and the last
    x[3, :] = 0.0
    x[3, 7] = 60.0  # a single large count
    return x


def _outputs(rng, likelihood, n, g, per_cell_theta):
    out = {"log_mu": torch.tensor(rng.normal(0.0, 1.5, (n, g)), dtype=torch.float32, requires_grad=True)}
    if likelihood in ("nb", "zinb"):
        if per_cell_theta == "table":  # a (batches, g) table and each cell's row in it
            out["log_theta"] = torch.tensor(rng.normal(0.0, 1.5, (3, g)), dtype=torch.float32, requires_grad=True)
            out["theta_row"] = torch.as_tensor(np.arange(n) % 3, dtype=torch.long)
        else:
            shape = (n, g) if per_cell_theta else (g,)
            out["log_theta"] = torch.tensor(rng.normal(0.0, 1.5, shape), dtype=torch.float32,
                                            requires_grad=True)
    if likelihood == "zinb":
        out["zi_logits"] = torch.tensor(rng.normal(0.0, 2.0, (n, g)), dtype=torch.float32, requires_grad=True)
    if likelihood == "gaussian":
        out = {"mean": torch.tensor(rng.normal(0.0, 1.0, (n, g)), dtype=torch.float32, requires_grad=True),
               "log_var": torch.tensor(rng.normal(0.0, 0.5, (g,)), dtype=torch.float32, requires_grad=True)}
    return out


def _dense_reference(likelihood, x, out):
    if likelihood == "gaussian":
        return L.gaussian_log_prob(x, out["mean"], out["log_var"]).sum(-1)
    if likelihood == "poisson":
        return L.poisson_log_prob(x, out["log_mu"]).sum(-1)
    log_theta = out["log_theta"]
    if "theta_row" in out:
        log_theta = log_theta[out["theta_row"]]
    log_theta = log_theta.expand_as(out["log_mu"])
    if likelihood == "nb":
        return L.nb_log_prob(x, out["log_mu"], log_theta).sum(-1)
    return L.zinb_log_prob(x, out["log_mu"], log_theta, out["zi_logits"]).sum(-1)


CASES = [("zinb", False), ("zinb", True), ("zinb", "table"), ("nb", False), ("nb", True), ("nb", "table"),
         ("poisson", False), ("gaussian", False)]


@pytest.mark.parametrize("likelihood,per_cell_theta", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_cell_log_prob_equals_dense_sum(likelihood, per_cell_theta, seed):
    rng = np.random.default_rng(seed)
    x = _counts(rng)
    mb = _minibatch(x, likelihood)
    out = _outputs(rng, likelihood, *x.shape, per_cell_theta)
    got = L.cell_log_prob(likelihood, mb, out)
    want = _dense_reference(likelihood, torch.as_tensor(x), out)
    assert got.shape == (x.shape[0],)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)

    # gradients agree too
    names = [k for k, t in out.items() if t.requires_grad]
    params = [out[k] for k in names]
    weights = torch.linspace(0.5, 1.5, x.shape[0])  # a non-uniform upstream gradient
    g_got = torch.autograd.grad((got * weights).sum(), params)
    g_want = torch.autograd.grad((want * weights).sum(), params)
    for name, a, b in zip(names, g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"grad of {n}: {m}")


def test_zinb_cell_log_prob_where_p_zero_underflows():
    """Zeros that both the dropout and the NB call near-impossible (P(0) < 1e-30): the fast
    path's recomputation keeps the per-cell value and gradients equal to the dense formula."""
    rng = np.random.default_rng(5)
    x = _counts(rng)
    mb = _minibatch(x, "zinb")
    out = _outputs(rng, "zinb", *x.shape, False)
    with torch.no_grad():  # a block of entries: pi ~ e^-110, theta = e^4, mu = e^6 -> NB(0) ~ e^-116
        out["zi_logits"][:, :5] = -110.0
        out["log_theta"][:5] = 4.0
    log_mu = torch.full(x.shape, 6.0)
    log_mu[:, 5:] = torch.as_tensor(rng.normal(0.0, 1.0, (x.shape[0], x.shape[1] - 5)), dtype=torch.float32)
    out["log_mu"] = log_mu.requires_grad_()
    assert (x[:, :5] == 0).any()  # some of those entries are zeros: the path under test
    got = L.cell_log_prob("zinb", mb, out)
    want = _dense_reference("zinb", torch.as_tensor(x), out)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-2)
    params = [out["log_mu"], out["zi_logits"], out["log_theta"]]
    for a, b in zip(torch.autograd.grad(got.sum(), params), torch.autograd.grad(want.sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("likelihood", ["zinb", "nb", "poisson"])
def test_cell_log_prob_all_zero_minibatch(likelihood):
    rng = np.random.default_rng(3)
    x = np.zeros((5, 12), dtype=np.float32)
    mb = _minibatch(x, likelihood)
    out = _outputs(rng, likelihood, 5, 12, per_cell_theta=False)
    torch.testing.assert_close(L.cell_log_prob(likelihood, mb, out),
                               _dense_reference(likelihood, torch.as_tensor(x), out),
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("likelihood", ["zinb", "nb", "poisson"])
def test_cell_log_prob_float64_is_tight(likelihood):
    """In float64 the sparse path and the dense path agree to rounding error."""
    rng = np.random.default_rng(4)
    x = _counts(rng).astype(np.float64)
    mb = _minibatch(x, likelihood)
    mb.x, mb.nz_val, mb.log_library = mb.x.double(), mb.nz_val.double(), mb.log_library.double()
    mb.log_x_factorial = torch.as_tensor(gammaln(x + 1).sum(1), dtype=torch.float64)
    out = {k: (v.detach().double() if v.is_floating_point() else v)
           for k, v in _outputs(rng, likelihood, *x.shape, True).items()}
    torch.testing.assert_close(L.cell_log_prob(likelihood, mb, out),
                               _dense_reference(likelihood, torch.as_tensor(x), out),
                               rtol=1e-10, atol=1e-9)


# ---------------------------------------------------------------- the minibatches data.py builds

@pytest.mark.parametrize("empty_rows", [[], [0], [2, 3], [6], [5, 6], [0, 6]],
                         ids=["none", "first", "middle", "last", "last-two", "first-and-last"])
def test_celldata_minibatch_matches_dense(empty_rows):
    """CellData.minibatch (sparse -> tensors) gives the coordinates and constants the
    likelihoods expect, for all-zero rows anywhere in the minibatch."""
    rng = np.random.default_rng(5)
    x = rng.poisson(2.0, (7, 9)).astype(np.float32)
    x[empty_rows] = 0.0
    X = sp.csr_matrix(x)
    data = CellData(X, np.zeros(7, dtype=np.int64), x.sum(1))
    mb = data.minibatch(np.arange(7))
    # x is the encoder input: log1p(counts) when the CellData says so
    np.testing.assert_allclose(mb.x.numpy(), np.log1p(x) if getattr(data, "log1p_input", False) else x,
                               rtol=1e-6)
    dense_again = np.zeros_like(x)
    dense_again[mb.nz_row.numpy(), mb.nz_col.numpy()] = mb.nz_val.numpy()
    np.testing.assert_array_equal(dense_again, x)
    np.testing.assert_allclose(mb.log_x_factorial.numpy(), gammaln(x + 1.0).sum(1), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(mb.log_library.numpy()[:, 0], np.log(np.maximum(x.sum(1), 1)), rtol=1e-6)
    out = _outputs(rng, "zinb", 7, 9, per_cell_theta=False)
    torch.testing.assert_close(L.cell_log_prob("zinb", mb, out),
                               _dense_reference("zinb", torch.as_tensor(x), out), rtol=1e-4, atol=1e-3)


def test_celldata_minibatch_row_subset():
    rng = np.random.default_rng(6)
    x = rng.poisson(1.0, (20, 6)).astype(np.float32)
    data = CellData(sp.csr_matrix(x), np.arange(20) % 2, x.sum(1))
    idx = np.array([17, 2, 9, 9, 0])
    mb = data.minibatch(idx)
    np.testing.assert_allclose(mb.x.numpy(), np.log1p(x[idx]) if getattr(data, "log1p_input", False) else x[idx],
                               rtol=1e-6)
    np.testing.assert_allclose(mb.log_x_factorial.numpy(), gammaln(x[idx] + 1).sum(1), rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(mb.batch.numpy(), idx % 2)


@pytest.mark.parametrize("likelihood", ["zinb", "nb", "poisson"])
def test_celldata_minibatch_explicit_zeros(likelihood):
    """Explicitly stored zeros in the CSR matrix are zero counts: for the ZINB they must
    get the zero-inflated mixture log[pi + (1 - pi) NB(0)], not log(1 - pi) + log NB(0)."""
    rng = np.random.default_rng(7)
    x = rng.poisson(1.0, (6, 8)).astype(np.float32)
    x[:, 2] = 0.0
    X = sp.csr_matrix(x)
    coo = X.tocoo()
    X = sp.csr_matrix((np.append(coo.data, [0.0, 0.0]).astype(np.float32),
                       (np.append(coo.row, [1, 4]), np.append(coo.col, [2, 2]))),
                      shape=x.shape)
    assert X.nnz == coo.nnz + 2  # two stored zeros
    data = CellData(X, np.zeros(6, dtype=np.int64), x.sum(1))
    mb = data.minibatch(np.arange(6))
    out = _outputs(rng, likelihood, 6, 8, per_cell_theta=False)
    torch.testing.assert_close(L.cell_log_prob(likelihood, mb, out),
                               _dense_reference(likelihood, torch.as_tensor(x), out), rtol=1e-4, atol=1e-3)
