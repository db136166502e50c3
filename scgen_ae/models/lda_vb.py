"""Classic LDA (Blei, Ng & Jordan 2003) by batch variational Bayes, as sklearn's
``LatentDirichletAllocation(learning_method="batch")``, in torch on sparse counts.

Cells are documents and counts are word counts. The E-step updates every cell's
variational Dirichlet gamma at once (sklearn loops over documents in Python): each sweep
is one sampled dense-dense product on the non-zero entries (SDDMM) and one sparse-dense
product, so the cost is O(nnz x k) per sweep and the dense (cells x genes) matrix is
never formed. Cells whose gamma has converged (mean absolute change below
``mean_change_tol``) are frozen, as in sklearn. As in sklearn, every EM iteration
restarts gamma from a random draw, but with 10 sweeps instead of up to 100, over 20
iterations instead of 10. The restarts matter more than converged E-steps: warm-starting
gamma from the previous iteration (tried first) locks the topics into their first
assignments and ended about 1 % above sklearn's held-out perplexity on Kang (mean of 5
seeds), more sweeps per iteration made it worse still; random restarts with 10 sweeps
end below sklearn's on all four shared data sets (BENCHMARKS.md). The training cells'
final proportions come from an E-step run to convergence from the last gamma.

Every E-step runs over blocks of :data:`E_STEP_CELLS` cells, read through the cells'
``read_rows`` (in memory or from a backed file, the same blocks): each EM iteration is one
pass over the cells, so the counts on disk are streamed, never held whole, and a fit from
disk runs the float operations of the fit in memory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as v
from ..data import ROW_BLOCK, CellData, transpose_pattern
from ..train import History, progress_bar
from .topic import LDA, SHAPE_RULES


# name -> (accepts the value, the rule, how to fix): one rule set for the config and for tl.lda,
# which applies it to its keywords before reading a cell
VB_RULES = {
    **SHAPE_RULES,
    "doc_topic_prior": (lambda x: x is None or (v._is_number(x) and x > 0), "None or a finite number > 0",
                        "pass e.g. doc_topic_prior=None (1 / n_topics, the default)"),
    "topic_word_prior": (lambda x: x is None or (v._is_number(x) and x > 0), "None or a finite number > 0",
                         "pass e.g. topic_word_prior=None (1 / n_topics, the default)"),
    "max_iter": (lambda x: v._is_int(x) and x >= 1, "an integer >= 1 (EM iterations)",
                 "pass e.g. max_iter=20 (the default)"),
    "max_doc_update_iter": (lambda x: v._is_int(x) and x >= 1, "an integer >= 1 (E-step sweeps of a transform)",
                            "pass e.g. max_doc_update_iter=100 (the default)"),
    "mean_change_tol": (lambda x: v._is_number(x) and x >= 0,
                        "a finite number >= 0 (mean absolute change of a cell's gamma below which it is frozen)",
                        "pass e.g. mean_change_tol=1e-3 (the default)"),
    "fit_doc_update_iter": (lambda x: v._is_int(x) and x >= 1, "an integer >= 1 (E-step sweeps per EM iteration)",
                            "pass e.g. fit_doc_update_iter=10 (the default)"),
}


def check_vb_options(options: dict, where: str) -> None:
    """Refuse classic LDA options (names of :data:`VB_RULES`) with :class:`~scgen_ae.InputError`;
    ``where`` says which call took them."""
    v.check_by_rules(VB_RULES, options, where)


@dataclass(frozen=True)
class VBLDAConfig:
    """Classic LDA. Priors default to 1 / n_topics (sklearn's defaults)."""

    n_genes: int
    n_batches: int = 1
    n_topics: int = 20
    doc_topic_prior: float | None = None
    topic_word_prior: float | None = None
    # 20 EM iterations of 10 sweeps each (sklearn: 10 of up to 100): cheaper per iteration
    # and, with gamma re-drawn every iteration, a lower held-out perplexity than sklearn's
    max_iter: int = 20
    max_doc_update_iter: int = 100
    mean_change_tol: float = 1e-3
    # E-step sweeps per EM iteration while fitting (from a random gamma each time)
    fit_doc_update_iter: int = 10

    #: a field files once held (see :class:`~scgen_ae.models.topic.TopicConfig`)
    LEGACY_DROPPED: ClassVar[dict] = {"likelihood": "counts"}

    def __post_init__(self):
        # for direct users of the config (and files); tl.lda applies the same rules to its keywords first
        check_vb_options({name: getattr(self, name) for name in VB_RULES}, "a field of VBLDAConfig")

    @property
    def alpha(self) -> float:
        return self.doc_topic_prior if self.doc_topic_prior is not None else 1.0 / self.n_topics

    @property
    def eta(self) -> float:
        return self.topic_word_prior if self.topic_word_prior is not None else 1.0 / self.n_topics


class VBLDAModule(nn.Module):
    """Holds the variational topic-gene Dirichlet parameters lambda ``(k, g)``."""

    def __init__(self, cfg: VBLDAConfig):
        super().__init__()
        self.cfg = cfg
        self.topic_word = nn.Parameter(torch.ones(cfg.n_topics, cfg.n_genes), requires_grad=False)


def _exp_dirichlet_expectation(param: torch.Tensor) -> torch.Tensor:
    """exp(E[log p]) under Dirichlet(param) for each row of ``param``."""
    return torch.exp(torch.digamma(param) - torch.digamma(param.sum(1, keepdim=True)))


class _Sparse:
    """A CSR count matrix as torch pieces: the E-step's two products on its support are a
    sampled dense-dense product (SDDMM) and a sparse-dense product, ~10x faster on the
    CPU than gathering (nnz, k) rows and scatter-adding them."""

    def __init__(self, X: sp.csr_matrix):
        self.X, self.shape = X, X.shape
        self.crow = torch.from_numpy(X.indptr.astype(np.int64))
        self.col = torch.from_numpy(X.indices.astype(np.int64))
        self.vals = torch.from_numpy(X.data.astype(np.float32))
        self._pattern = self.csr(torch.zeros_like(self.vals))  # SDDMM's output pattern, values ignored
        self._transposed = None

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, values, size=self.shape)

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        """The (g, n) CSR transpose of ``csr(values)``; its pattern is computed once."""
        if self._transposed is None:
            self._transposed = tuple(torch.from_numpy(a.astype(np.int64)) for a in transpose_pattern(self.X))
        crow, col, perm = self._transposed
        return torch.sparse_csr_tensor(crow, col, values[perm], size=self.shape[::-1])

    def normaliser(self, et: torch.Tensor, exp_elog_beta: torch.Tensor) -> torch.Tensor:
        """(exp E[log theta] @ exp E[log beta]) + 1e-30 on the support of x, as a values vector."""
        k = et.shape[1]
        if k < 8:  # torch's CPU SDDMM is ~7x slower below 8 columns: pad with zero topics
            et = F.pad(et, (0, 8 - k))
            exp_elog_beta = F.pad(exp_elog_beta, (0, 0, 0, 8 - k))
        return torch.sparse.sampled_addmm(self._pattern, et, exp_elog_beta, beta=0.0).values().add_(1e-30)

    def weights(self, et: torch.Tensor, exp_elog_beta: torch.Tensor) -> torch.Tensor:
        """CSR matrix of x / (exp E[log theta] @ exp E[log beta]) on the support of x."""
        norm = self.normaliser(et, exp_elog_beta)
        return self.csr(torch.div(self.vals, norm, out=norm))


def e_step(X: sp.csr_matrix | _Sparse, exp_elog_beta: torch.Tensor, alpha: float, gamma: torch.Tensor | None,
           max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Variational E-step for all cells of ``X`` ``(n, g)`` at once.

    Returns gamma ``(n, k)``, the sufficient statistics ``(k, g)`` (before the
    multiplication by exp(E[log beta]) that the M-step applies) and the data term of the
    variational bound summed over the cells, sum_c sum_g x log sum_k exp(E[log theta_k] +
    E[log beta_kg]) (sklearn's first ``_approx_bound`` term; minus its mean per cell is a
    training curve that costs nothing extra). A sum, so that blocks of cells add up.
    Converged cells are dropped from the sweeps: the working set shrinks as the cells settle.
    """
    full = X if isinstance(X, _Sparse) else _Sparse(X)
    n, k = full.shape[0], exp_elog_beta.shape[0]
    beta_t = exp_elog_beta.T.contiguous()
    gamma = torch.ones(n, k) if gamma is None else gamma.clone()
    idx = np.arange(n)  # the cells still being updated
    sub = full
    for _ in range(max_iter):
        g_sub = gamma[idx]
        et = _exp_dirichlet_expectation(g_sub)
        new = alpha + et * (sub.weights(et, exp_elog_beta) @ beta_t)
        gamma[idx] = new
        moving = ((new - g_sub).abs().mean(1) >= tol).numpy()
        if not moving.any():
            break
        if moving.sum() < 0.7 * len(idx):  # rebuild the working set only when it has shrunk enough
            idx = idx[moving]
            sub = _Sparse(full.X[idx])
    et = _exp_dirichlet_expectation(gamma)
    norm = full.normaliser(et, exp_elog_beta)
    data_term = float((full.vals.double() * norm.double().log()).sum())
    # sufficient statistics: (w^T @ et)^T with w = x / norm, via the transposed pattern
    return gamma, (full.transposed(full.vals / norm) @ et).T, data_term


E_STEP_CELLS = ROW_BLOCK  # cells per E-step: O(block x nnz per cell) memory for the counts


def _blocks(data, rows: np.ndarray):
    """``(start, stop, counts of cells rows[start:stop])`` per block of :data:`E_STEP_CELLS`
    cells of a :class:`~scgen_ae.data.CellData` or an :class:`~scgen_ae.ondisk.OnDiskCellData`."""
    for start in range(0, len(rows), E_STEP_CELLS):
        stop = min(start + E_STEP_CELLS, len(rows))
        yield start, stop, _Sparse(data.read_rows(rows[start:stop]))


def e_step_blocks(blocks, n: int, exp_elog_beta: torch.Tensor, alpha: float, gamma: torch.Tensor | None,
                  max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """:func:`e_step` over ``blocks`` (of :func:`_blocks`) of ``n`` cells: gamma ``(n, k)``,
    the sufficient statistics summed over the blocks and the data term per cell."""
    out, sstats, data_sum = torch.empty(n, exp_elog_beta.shape[0]), None, 0.0
    for start, stop, X in blocks:
        part, stats, data_term = e_step(X, exp_elog_beta, alpha, None if gamma is None else gamma[start:stop],
                                        max_iter, tol)
        out[start:stop] = part
        sstats = stats if sstats is None else sstats.add_(stats)
        data_sum += data_term
    return out, sstats, -data_sum / max(n, 1)


def fit_vb(module: VBLDAModule, data, rows: np.ndarray, seed: int,
           progress: bool = False) -> tuple[History, torch.Tensor]:
    """Batch variational Bayes EM on the cells ``rows`` of ``data`` (a CellData or an
    OnDiskCellData; in place); returns the History and their gamma ``(len(rows), k)`` from
    the last E-step (a start for their final proportions). ``progress``: the progress bar of
    :func:`scgen_ae.train.progress_bar`. Ctrl-C ends the fit on the topics of the last
    finished iteration (``History.interrupted``)."""
    cfg = module.cfg
    start = time.perf_counter()
    n = len(rows)
    # in memory the blocks are built once for all iterations; on disk each iteration reads them again
    kept = list(_blocks(data, rows)) if isinstance(data, CellData) else None
    gen = torch.Generator().manual_seed(seed)
    # sklearn's initialisation: lambda ~ Gamma(100, 1/100)
    lam = torch.distributions.Gamma(torch.full((cfg.n_topics, cfg.n_genes), 100.0), torch.full((1,), 100.0))
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))
        lam = lam.sample()
    history, gamma = History(), None
    restarts = np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=gen)))
    bar = progress_bar(range(cfg.max_iter), "classic LDA", "iteration", progress)
    try:
        for _ in bar:
            exp_elog_beta = _exp_dirichlet_expectation(lam)
            # sklearn's random start of every E-step: gamma ~ Gamma(100, 1/100)
            start_gamma = torch.from_numpy(restarts.gamma(100.0, 0.01, (n, cfg.n_topics)).astype(np.float32))
            blocks = kept if kept is not None else _blocks(data, rows)
            gamma, sstats, data_term = e_step_blocks(blocks, n, exp_elog_beta, cfg.alpha, start_gamma,
                                                     cfg.fit_doc_update_iter, cfg.mean_change_tol)
            lam = cfg.eta + exp_elog_beta * sstats
            history.train_loss.append(data_term)
            history.kl_weight.append(1.0)
            bar.set_postfix(loss=f"{data_term:.1f}", refresh=False)
    except KeyboardInterrupt:  # as train.fit: keep what the finished iterations fitted
        history.interrupted = True
    finally:
        bar.close()
    module.topic_word.data.copy_(lam)

    history.best_epoch = len(history.train_loss) - 1
    history.seconds = time.perf_counter() - start
    return history, gamma


class ClassicLDA(LDA):
    """A classic (variational Bayes) LDA; same methods as :class:`~scgen_ae.models.topic.LDA`."""

    module_class = VBLDAModule
    config_class = VBLDAConfig

    def topic_gene_matrix(self) -> np.ndarray:
        """(n_genes, n_topics): E[beta], each topic's gene distribution; columns sum to 1."""
        lam = self.module.topic_word.detach().cpu()
        return (lam / lam.sum(1, keepdim=True)).T.numpy()

    def _proportions(self, data: CellData, batch_size: int = 1024, init: torch.Tensor | None = None,
                     max_iter: int | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """E-step with the topics fixed (``max_doc_update_iter`` sweeps unless ``max_iter``) of
        the cells ``rows`` (default all), in blocks, in memory or on disk; ``init`` warm-starts gamma."""
        lam = self.module.topic_word.detach().cpu()
        cfg = self.config
        rows = np.arange(data.n_cells) if rows is None else np.asarray(rows)
        gamma, _, _ = e_step_blocks(_blocks(data, rows), len(rows), _exp_dirichlet_expectation(lam), cfg.alpha, init,
                                    max_iter or cfg.max_doc_update_iter, cfg.mean_change_tol)
        return (gamma / gamma.sum(1, keepdim=True)).numpy()

    def _log_probs(self, theta: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        beta = torch.from_numpy(self.topic_gene_matrix().T)
        return (theta @ beta).clamp_min(1e-30).log()
