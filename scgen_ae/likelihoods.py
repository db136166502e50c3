"""Observation likelihoods, written once and shared by every model.

Each likelihood is one :class:`Likelihood` subclass, registered under its name when it is
defined (:func:`get_likelihood`). The object says which decoder heads it needs and
whether it models counts, turns decoder outputs into its parameters, and scores, averages
and samples data; the models, the input checks, the fronts and the command line ask it
instead of testing names. Two scores per likelihood:

``log_prob(x, entries)``
    Element-wise log-density of the parameters at single entries. This is the reference
    definition, tested against ``scipy.stats`` / ``torch.distributions``.
``cell_log_prob(batch, params)``
    The per-cell sum over genes used in training. For the count likelihoods it
    exploits sparsity: the zero-count term is evaluated densely with cheap ops and
    the expensive ``lgamma`` terms only on the non-zero entries of the minibatch
    (typically 5-30 % of a 10x matrix). Tests check it equals the element-wise sum.

Parameters are passed on the log scale (``log_mu``, ``log_theta``) because that is
what the decoder produces and it keeps ``log(theta + mu)`` numerically stable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Minibatch:
    """One minibatch of cells as the models see it.

    x : (n, g) dense encoder input: log1p(counts) for the count likelihoods, the values
        themselves for ``gaussian`` (the count likelihoods read the counts from ``nz_*``)
    batch : (n,) int64 batch codes
    log_library : (n, 1) log of the observed library size
    nz_row, nz_col : (nnz,) int64 coordinates of the non-zero entries of ``x``
    nz_val : (nnz,) float32 values at those coordinates
    log_x_factorial : (n,) sum over genes of lgamma(x + 1), a constant of the data
    label : optional (n,) int64 label codes for semi-supervised training, -1 where a cell
        is unlabelled; None when the model trains no classifier
    cat_covs : optional (n, k) int64 codes of the categorical covariates besides the batch
    cont_covs : optional (n, c) float32 scaled values of the continuous covariates
    unmatched : optional (n, n_batches) bool, True where a cell's neighbourhood has no
        counterpart in that batch (the composition check's unmatched clusters): the MNN
        alignment pairs no such cell with that batch's cells
    """

    x: torch.Tensor
    batch: torch.Tensor
    log_library: torch.Tensor
    nz_row: torch.Tensor
    nz_col: torch.Tensor
    nz_val: torch.Tensor
    log_x_factorial: torch.Tensor
    label: torch.Tensor | None = None
    cat_covs: torch.Tensor | None = None
    cont_covs: torch.Tensor | None = None
    unmatched: torch.Tensor | None = None

    @property
    def covs(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(categorical codes, continuous values): what the modules condition on besides the batch."""
        return self.cat_covs, self.cont_covs

    def covs_of(self, rows: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """:attr:`covs` of the cells ``rows`` (repeats allowed)."""
        return tuple(None if c is None else c[rows] for c in self.covs)

    def to(self, device: torch.device) -> "Minibatch":
        moved = (getattr(self, f) for f in self.__dataclass_fields__)
        return Minibatch(*(t if t is None else t.to(device, non_blocking=True) for t in moved))


# ---------------------------------------------------------------- element-wise


def _nb_log_terms(x, log_mu, log_theta):
    """Return (log theta/(theta+mu) * theta, log mu/(theta+mu)) for the NB."""
    log_theta_mu = torch.logaddexp(log_theta, log_mu)
    theta = log_theta.exp()
    return theta * (log_theta - log_theta_mu), log_mu - log_theta_mu


def nb_log_prob(x, log_mu, log_theta):
    """Negative binomial (mean ``mu``, inverse dispersion ``theta``) log-pmf."""
    zero_term, log_p = _nb_log_terms(x, log_mu, log_theta)
    theta = log_theta.exp()
    return (
        torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1.0) + zero_term + x * log_p
    )


def zinb_log_prob(x, log_mu, log_theta, zi_logits):
    """Zero-inflated NB log-pmf; ``zi_logits`` are the logits of the dropout probability."""
    nb = nb_log_prob(x, log_mu, log_theta)
    zero_term, _ = _nb_log_terms(x, log_mu, log_theta)
    softplus = F.softplus(zi_logits)
    log_zero = torch.logaddexp(zi_logits, zero_term) - softplus
    return torch.where(x < 0.5, log_zero, nb - softplus)


def poisson_log_prob(x, log_mu):
    return x * log_mu - log_mu.exp() - torch.lgamma(x + 1.0)


def gaussian_log_prob(x, mean, log_var):
    return -0.5 * (log_var + (x - mean) ** 2 / log_var.exp() + 1.8378770664093453)  # log(2 pi)


def entry_log_prob(likelihood: str | Likelihood, x: torch.Tensor, out: dict[str, torch.Tensor],
                   rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Log-probability ``(k,)`` of the counts ``x`` ``(k,)`` at the entries ``(rows, cols)`` of a
    decoder output ``out``: held-out scoring of single entries with the element-wise
    definitions (:meth:`Likelihood.entry_log_prob`); refused for likelihoods of non-counts."""
    lik = get_likelihood(likelihood)
    if not lik.counts:
        raise ValueError(f"entry_log_prob scores counts; likelihood={lik.name!r} is not a count likelihood.")
    return lik.entry_log_prob(x, out, rows, cols)


# ----------------------------------------------------------------- per cell


def cell_log_prob(likelihood: str | Likelihood, mb: Minibatch, out: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-cell log-likelihood ``(n,)`` of ``mb`` under the decoder output ``out``
    (:meth:`Likelihood.cell_log_prob` of the likelihood named ``likelihood``).

    ``out`` holds ``log_mu`` (n, g) for the count likelihoods, plus ``log_theta``
    (g,), (rows, g) or (n, g) (with ``theta_row``, each cell's row) for ``nb``/``zinb``
    and ``zi_logits`` (n, g) for ``zinb``; for ``gaussian`` it holds ``mean`` and ``log_var``.
    """
    return get_likelihood(likelihood).cell_log_prob(mb, out)


def _log_zero(zi: torch.Tensor, zt: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """ZINB log P(x = 0) = log[pi + (1 - pi) e^zt], with pi = sigmoid(zi) and zt = log NB(0).

    Written with exp, lerp and log, which run vectorised, instead of logaddexp(zi, zt) -
    softplus(zi) (scalar loops on the CPU, ~3x the time). Where the sum underflows (dropout
    and NB zero both below ~1e-30) those entries are recomputed the stable way.
    """
    p_zero = torch.lerp(zt.exp(), torch.ones((), dtype=zt.dtype, device=zt.device), pi)
    out = p_zero.log()
    if float(p_zero.min()) < 1e-30:  # one reduction; the mask only when needed (rarely)
        tiny = p_zero < 1e-30
        out[tiny] = torch.logaddexp(zi[tiny], zt[tiny]) - F.softplus(zi[tiny])
    return out


def _put(dense: torch.Tensor, lin: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``dense`` (contiguous, owned) with the flat positions ``lin`` set to ``values``."""
    dense.view(-1).index_copy_(0, lin, values)
    return dense


class _NBCellLogProb(torch.autograd.Function):
    """Per-cell sum of the (ZI)NB log-pmf without lgamma(x+1), with a hand-written backward.

    Autograd through the element-wise formula records ~40 dense (n, g) ops (most of them
    in the backward of logaddexp/softplus); here forward and backward each take about a
    dozen, everything involving ``x`` itself (lgamma, digamma) runs on the non-zero
    entries only, and lgamma/digamma of theta alone run once per row of the small
    (batches x genes) theta table. Checked against autograd on :func:`zinb_log_prob`.

    Per entry, with t = theta, m = mu, q = t/(t+m), zt = t log q = log NB(0):
      zero count:     log[pi + (1-pi) e^zt]               (NB: zt)
      count x > 0:    log(1-pi) + zt + lgamma(x+t) - lgamma(t) + x log(1-q)
    """

    @staticmethod
    def forward(ctx, log_mu, log_theta, theta_row, zi, r, c, v):
        g = log_mu.shape[1]
        lin = r * g + c  # flat positions of the non-zeros: take() is cheaper than x[r, c]
        t_tab = log_theta.exp()  # (B, g)
        single = log_theta.shape[0] == 1
        t = t_tab if single else t_tab[theta_row]
        lt = log_theta if single else log_theta[theta_row]
        m = log_mu.exp()
        t_m = t + m
        q = t / t_m
        zt = t * (lt - torch.log(t_m))
        # the non-zero entries recompute what they need from gathered inputs: a few ops on
        # the non-zeros cost less than gathering each dense intermediate
        tab_lin = theta_row[r] * g + c
        t_nz, log_mu_nz = t_tab.take(tab_lin), log_mu.take(lin)
        m_nz = log_mu_nz.exp()
        log_t_m_nz = torch.log(t_nz + m_nz)
        zt_nz = t_nz * (log_theta.take(tab_lin) - log_t_m_nz)
        extra = torch.lgamma(v + t_nz) - torch.lgamma(t_tab).take(tab_lin) + v * (log_mu_nz - log_t_m_nz)
        zi_nz = pi = None
        if zi is None:
            dense = zt.sum(-1)
            nz_value = extra
        else:
            pi = torch.sigmoid(zi)
            dense = _log_zero(zi, zt, pi).sum(-1)
            zi_nz = zi.take(lin)
            # log NB(x) + log(1 - pi) - log_zero, where both carry -softplus(zi)
            nz_value = zt_nz + extra - torch.logaddexp(zi_nz, zt_nz)
        ctx.table_shape = log_theta.shape
        ctx.save_for_backward(t, m, q, zt, zi, r, v, t_tab, theta_row, lin, tab_lin, t_nz, m_nz, zt_nz, zi_nz, pi)
        return dense.index_add(0, r, nz_value)

    @staticmethod
    def backward(ctx, grad_out):
        t, m, q, zt, zi, r, v, t_tab, theta_row, lin, tab_lin, t_nz, m_nz, zt_nz, zi_nz, pi = ctx.saved_tensors
        g, g_nz = grad_out[:, None], grad_out[r]
        # on the support (count x > 0), where the zero-count formula does not apply
        q_nz = t_nz / (t_nz + m_nz)
        nz_mu = q_nz * (v - m_nz) * g_nz
        digamma_t_nz = torch.digamma(t_tab).take(tab_lin)
        nz_theta = (zt_nz + q_nz * m_nz + t_nz * (torch.digamma(v + t_nz) - digamma_t_nz) - v * q_nz) * g_nz
        # zero counts: d zt / d log mu = -q m and d zt / d log theta = zt + q m, weighted for the
        # ZINB by w = d log_zero / d zt; grad_out is folded in first, to save dense passes
        wg = torch.sigmoid(zt - zi).mul_(g) if zi is not None else g.expand_as(m)
        wg_qm = wg * (q * m)
        d_theta = _put(torch.addcmul(wg_qm, wg, zt), lin, nz_theta)
        d_mu = _put(wg_qm.neg_(), lin, nz_mu)
        d_zi = None
        if zi is not None:  # d log_zero / d zi = 1 - w - pi; d log(1 - pi) / d zi = -pi
            d_zi = _put(torch.addcmul(g - wg, pi, g, value=-1.0), lin, -torch.sigmoid(zi_nz) * g_nz)
        d_table = torch.zeros(ctx.table_shape, dtype=d_theta.dtype, device=d_theta.device)
        d_table.index_add_(0, theta_row, d_theta)
        return d_mu, d_table, None, d_zi, None, None, None


# ---------------------------------------------------------------- likelihood objects

_REGISTRY: dict[str, Likelihood] = {}


class Likelihood:
    """An observation model of the decoder's output, registered under its ``name``.

    Defining a subclass that sets ``name`` registers one instance of it
    (:func:`get_likelihood` returns it), and everything that depends on the likelihood --
    the decoder heads, the loss, the checks of the data, expected values, samples, the
    command line's choices -- asks that object, so a new likelihood is one class.

    Attributes
    ----------
    name
        The value of ``likelihood=`` that selects it.
    counts
        It models raw counts: the encoder reads log1p(counts), the data are checked to be
        non-negative integers, and errors about non-count data give the count advice.
    extra_heads
        Names of the decoder heads it needs besides the expression head, in order (e.g.
        ``("dropout",)``); :meth:`params` receives their outputs under these names.
    uses_dispersion
        It reads the model's per-gene dispersion table (log theta of the negative
        binomials, the log variance of the Gaussian).
    scvi_name
        scvi-tools' ``gene_likelihood`` for the same model, or None where it has none.

    Notes
    -----
    Two expectations are kept apart: :meth:`mean` is E[x] under the whole likelihood
    (for the ZINB, (1 - pi) mu: the dropout zeros included), while :meth:`expression` is
    the decoder's expression level, the mean of the count model before zero inflation
    (mu: the NB mean), which is what scvi-tools' ``get_normalized_expression`` and
    ``tl.denoise`` report. The two differ only for zero-inflated likelihoods.
    """

    name: ClassVar[str]
    counts: ClassVar[bool] = True
    extra_heads: ClassVar[tuple[str, ...]] = ()
    uses_dispersion: ClassVar[bool] = False
    scvi_name: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            return  # a shared base, not a likelihood of its own
        known = _REGISTRY.get(cls.name)
        if known is not None and type(known).__qualname__ != cls.__qualname__:
            raise ValueError(f"likelihood name {cls.name!r} is taken by {type(known).__qualname__}.")
        _REGISTRY[cls.name] = cls()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def params(self, expression: torch.Tensor, log_library: torch.Tensor, heads: dict[str, torch.Tensor],
               log_dispersion: torch.Tensor | None, dispersion_row: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The parameters the other methods read, from the decoder's outputs.

        Parameters
        ----------
        expression
            ``(n, g)``: for count likelihoods the log expression shares (the model's link
            applied, e.g. log-softmax); otherwise the expression head itself.
        log_library
            ``(n, 1)`` log library sizes.
        heads
            The :attr:`extra_heads`, each ``(n, g)``.
        log_dispersion
            A ``(rows, g)`` table (one row per batch, or per cell); ignored unless
            :attr:`uses_dispersion`.
        dispersion_row
            ``(n,)`` each cell's row of ``log_dispersion``; None: its first row for every cell.
        """
        raise NotImplementedError

    def cell_log_prob(self, mb: Minibatch, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-cell log-likelihood ``(n,)`` of the minibatch's data: what training sums."""
        raise NotImplementedError

    def entry_params(self, params: dict[str, torch.Tensor], rows: torch.Tensor,
                     cols: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parameters at the entries ``(rows, cols)``, each ``(k,)``."""
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor, entries: dict[str, torch.Tensor]) -> torch.Tensor:
        """Element-wise log-density of ``x`` under :meth:`entry_params`' output (same shape)."""
        raise NotImplementedError

    def entry_log_prob(self, x: torch.Tensor, params: dict[str, torch.Tensor], rows: torch.Tensor,
                       cols: torch.Tensor) -> torch.Tensor:
        """Log-probability ``(k,)`` of the values ``x`` ``(k,)`` at the entries ``(rows, cols)``."""
        return self.log_prob(x, self.entry_params(params, rows, cols))

    def mean(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """E[x] ``(n, g)`` under the whole likelihood (see the class notes)."""
        raise NotImplementedError

    def expression(self, params: dict[str, torch.Tensor], library_size: float | str = "observed") -> torch.Tensor:
        """The decoder's expression ``(n, g)``: for count likelihoods the count model's mean
        before zero inflation, at the observed library size (``"observed"``) or as shares x
        ``library_size``; otherwise the mean, whatever ``library_size``."""
        if library_size == "observed":
            return params["log_mu"].exp()
        return params["log_scale"].exp() * float(library_size)

    def sample(self, params: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """One draw ``(n, g)`` of data from the likelihood."""
        raise NotImplementedError


def get_likelihood(name: str | Likelihood) -> Likelihood:
    """The registered likelihood called ``name`` (a :class:`Likelihood` is returned as is);
    ValueError, listing the registered names, for any other name."""
    if isinstance(name, Likelihood):
        return name
    found = _REGISTRY.get(name) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"likelihood={name!r} is not a registered likelihood; choose one of {likelihood_names()}.")
    return found


def likelihood_names(counts: bool | None = None) -> tuple[str, ...]:
    """Names of the registered likelihoods, in the order they were defined; ``counts``:
    only those that model counts (True) or only those that do not (False)."""
    return tuple(k for k, lik in _REGISTRY.items() if counts is None or lik.counts == counts)


def models_counts(likelihood: str | None) -> bool:
    """Whether data for ``likelihood`` must be counts: None and ``"counts"`` stand for
    "counts, no likelihood named" (the topic models' training data)."""
    return likelihood in (None, "counts") or get_likelihood(likelihood).counts


def __getattr__(name: str):
    # the names as tuples for messages, read from the registry when asked (never stale)
    if name == "LIKELIHOODS":
        return likelihood_names()
    if name == "COUNT_LIKELIHOODS":
        return likelihood_names(counts=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _flat_at(t: torch.Tensor, lin: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).take(lin)


def _lin(params: dict[str, torch.Tensor], key: str, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return rows * params[key].shape[1] + cols


def _theta_table(params: dict[str, torch.Tensor], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (rows, g) log theta table and each of the ``n`` cells' row in it."""
    log_theta = params["log_theta"]
    if log_theta.dim() == 1:
        log_theta = log_theta[None, :]
    row = params.get("theta_row")
    if row is None:
        row = (torch.zeros(n, dtype=torch.long, device=log_theta.device) if log_theta.shape[0] == 1
               else torch.arange(n, device=log_theta.device))
    return log_theta, row


class _CountLikelihood(Likelihood):
    """What the count likelihoods share: a mean mu = shares x library on the log scale."""

    def params(self, expression, log_library, heads, log_dispersion, dispersion_row):
        return {"log_scale": expression, "log_mu": expression + log_library}

    def entry_params(self, params, rows, cols):
        return {"log_mu": _flat_at(params["log_mu"], _lin(params, "log_mu", rows, cols))}

    def mean(self, params):
        return params["log_mu"].exp()


class _NegativeBinomialFamily(_CountLikelihood):
    """NB and ZINB: a dispersion theta per gene (a row of the table per batch or cell)."""

    uses_dispersion = True

    def params(self, expression, log_library, heads, log_dispersion, dispersion_row):
        out = super().params(expression, log_library, heads, log_dispersion, dispersion_row)
        # the (rows, g) table and each cell's row in it: the likelihood gathers
        out["log_theta"] = log_dispersion
        out["theta_row"] = dispersion_row if dispersion_row is not None else torch.zeros(
            len(expression), dtype=torch.long, device=expression.device)
        return out

    def _cell_log_prob(self, mb, params, zi):
        log_theta, theta_row = _theta_table(params, len(mb.log_library))
        return (_NBCellLogProb.apply(params["log_mu"], log_theta, theta_row, zi, mb.nz_row, mb.nz_col, mb.nz_val)
                - mb.log_x_factorial)

    def entry_params(self, params, rows, cols):
        lin = _lin(params, "log_mu", rows, cols)
        log_theta, theta_row = _theta_table(params, params["log_mu"].shape[0])
        return {"log_mu": _flat_at(params["log_mu"], lin), "log_theta": _flat_at(log_theta[theta_row], lin)}

    def _gamma_poisson(self, params, generator):
        """NB counts on the CPU: Poisson(Gamma(theta, scale mu / theta))."""
        mu = params["log_mu"].exp()
        log_theta, theta_row = _theta_table(params, mu.shape[0])
        theta = log_theta[theta_row].exp()
        # numpy's Gamma, seeded from ``generator``: torch's takes no generator, so its draws
        # would follow the global RNG and seed= would not reproduce them
        gamma_rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        gamma = torch.from_numpy(gamma_rng.standard_gamma(theta.detach().cpu().double().numpy()).astype(np.float32))
        return torch.poisson(gamma * (mu / theta).cpu(), generator=generator)


class ZINB(_NegativeBinomialFamily):
    """Zero-inflated negative binomial: a dropout head ``zi_logits`` on top of the NB."""

    name = "zinb"
    extra_heads = ("dropout",)
    scvi_name = "zinb"

    def params(self, expression, log_library, heads, log_dispersion, dispersion_row):
        out = super().params(expression, log_library, heads, log_dispersion, dispersion_row)
        out["zi_logits"] = heads["dropout"]
        return out

    def cell_log_prob(self, mb, params):
        return self._cell_log_prob(mb, params, params["zi_logits"])

    def entry_params(self, params, rows, cols):
        out = super().entry_params(params, rows, cols)
        out["zi_logits"] = _flat_at(params["zi_logits"], _lin(params, "zi_logits", rows, cols))
        return out

    def log_prob(self, x, entries):
        return zinb_log_prob(x, entries["log_mu"], entries["log_theta"], entries["zi_logits"])

    def mean(self, params):
        # E[x] of the mixture: (1 - dropout probability) x the NB mean
        return params["log_mu"].exp() * torch.sigmoid(-params["zi_logits"])

    def sample(self, params, generator):
        counts = self._gamma_poisson(params, generator)
        dropout = torch.rand(counts.shape, generator=generator) < torch.sigmoid(params["zi_logits"].cpu())
        return torch.where(dropout, torch.zeros_like(counts), counts).to(params["log_mu"].device)


class NB(_NegativeBinomialFamily):
    """Negative binomial with mean mu and inverse dispersion theta."""

    name = "nb"
    scvi_name = "nb"

    def cell_log_prob(self, mb, params):
        return self._cell_log_prob(mb, params, None)

    def log_prob(self, x, entries):
        return nb_log_prob(x, entries["log_mu"], entries["log_theta"])

    def sample(self, params, generator):
        return self._gamma_poisson(params, generator).to(params["log_mu"].device)


class Poisson(_CountLikelihood):
    """Poisson with mean mu (no dispersion)."""

    name = "poisson"
    scvi_name = "poisson"

    def cell_log_prob(self, mb, params):
        log_mu = params["log_mu"]
        r, c, v = mb.nz_row, mb.nz_col, mb.nz_val
        # sum_g x log mu - mu - lgamma(x+1); the x log mu term is zero off the support
        return (
            torch.zeros_like(mb.log_library[:, 0]).index_add(0, r, v * log_mu[r, c])
            - log_mu.exp().sum(-1)
            - mb.log_x_factorial
        )

    def log_prob(self, x, entries):
        return poisson_log_prob(x, entries["log_mu"])

    def sample(self, params, generator):
        mu = params["log_mu"].exp()
        return torch.poisson(mu.cpu(), generator=generator).to(mu.device)


class Gaussian(Likelihood):
    """Gaussian on log-normalised values: the decoder's mean and a per-gene log variance."""

    name = "gaussian"
    counts = False
    uses_dispersion = True

    def params(self, expression, log_library, heads, log_dispersion, dispersion_row):
        log_var = log_dispersion[0] if dispersion_row is None else log_dispersion[dispersion_row]
        return {"mean": expression, "log_var": log_var}

    def cell_log_prob(self, mb, params):
        return gaussian_log_prob(mb.x, params["mean"], params["log_var"]).sum(-1)

    def entry_params(self, params, rows, cols):
        lin = _lin(params, "mean", rows, cols)
        log_var = params["log_var"]
        return {"mean": _flat_at(params["mean"], lin),
                "log_var": log_var[cols] if log_var.dim() == 1 else _flat_at(log_var.expand_as(params["mean"]), lin)}

    def log_prob(self, x, entries):
        return gaussian_log_prob(x, entries["mean"], entries["log_var"])

    def mean(self, params):
        return params["mean"]

    def expression(self, params, library_size="observed"):
        return params["mean"]

    def sample(self, params, generator):
        mean = params["mean"]
        noise = torch.randn(mean.shape, generator=generator).to(mean.device)
        return mean + noise * (0.5 * params["log_var"]).exp()
