"""Solvers for (integrative) NMF on sparse CSR chunks of cells, in plain torch (CPU or CUDA).

Notation: cells x genes data ``X_b`` of batch ``b`` (one block when there are no
batches), cell factors ``W_b`` (cells x k), shared gene loadings ``H`` (k x genes) and,
for integrative NMF (LIGER's iNMF), batch-specific loadings ``V_b`` (k x genes)::

    sum_b 1/2 ||X_b - W_b (H + V_b)||^2 + lam/2 ||W_b V_b||^2        (Frobenius)
    generalised KL(X || W H)                                       (KL / Poisson, plain NMF)

Frobenius uses HALS (block-coordinate descent on columns / rows, several cheap sweeps per
sparse product, as Gillis & Glineur's accelerated HALS) or multiplicative updates; KL
uses multiplicative updates (Lee & Seung). The gene-side updates only need the
sufficient statistics ``A_b = W_b^T W_b`` (k x k) and ``B_b = W_b^T X_b`` (k x genes),
kept up to date chunk by chunk; so after every chunk of cells H and V can be updated
(online NMF, Mairal et al. 2010), and the dense working set is O(chunk x k + k x genes),
independent of the number of cells. X is never densified.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from ..train import History, progress_bar
from ._nmf_data import Chunk, make_chunks, sketch_chunks

_EPS = 1e-10
# online fits keep each chunk's W^T X (k x genes floats) up to this many bytes in all
KEPT_BYTES = 2**28
# power iterations of the randomized SVD behind the NNDSVD start. 7 (sklearn's for nndsvda) when
# each batch's cells are one chunk in memory: the start is then near the exact SVD, and the fit
# reaches the same minimum whatever the seed (2 iterations: 3 of 12 seed / data set pairs stalled
# at another one, BENCHMARKS.md). Chunked and streamed fits keep 2: each iteration is two more
# passes over all cells.
POWER_ITERS_WHOLE, POWER_ITERS_CHUNKED = 7, 2
# Plain Frobenius HALS fits whose blocks are whole in memory, started from NNDSVD, pass over
# the rank-q sketch X ~ (U S) V^T (q = k + 10) that the start's randomized SVD leaves behind,
# between SKETCH_AFTER passes over X and the passes over X that finish the fit. A pass over
# the sketch costs cells x q x k + q x genes x k flops instead of two products with X, and it
# needs fewer passes (the noise directions are gone): on cellbench_3cl sklearn's minimum after
# ~20 passes over X instead of 88-93, on the other shared data sets after 4-18 (BENCHMARKS.md).
# The first passes over X choose the minimum the fit goes to: started on the sketch, 4 of 5
# seeds of cellbench_3cl went to another one (0.14 % higher), after 3 passes over X none did.
# Its passes being cheap, the sketch phase stops at a relative improvement below
# max(tol / 10, SKETCH_TOL), or after max_iter passes. Not for iNMF's plain start: the
# minimum it leads to there cost the aligned PBMC factors 0.04 KMeans NMI at two seeds.
SKETCH_AFTER, SKETCH_TOL = 3, 1e-5


# ---------------------------------------------------------------- HALS / MU kernels

def hals_columns(W: torch.Tensor, R: torch.Tensor, G: torch.Tensor, sweeps: int) -> torch.Tensor:
    """``sweeps`` HALS passes for min_{W>=0} 1/2 ||X - W M||^2 given R = X M^T, G = M M^T.

    Works on W^T, so that each factor is a contiguous row (column writes are strided)."""
    return hals_rows(W.T.contiguous(), R.T, G, sweeps).T


def hals_rows(H: torch.Tensor, B: torch.Tensor, A: torch.Tensor, sweeps: int) -> torch.Tensor:
    """HALS for min_{H>=0} over rows of H, given B = W^T X and A = W^T W (the transposed problem).

    Each row update is that row's exact minimiser with the others fixed,
    h_j = max(0, (b_j - sum_{l != j} a_jl h_l) / a_jj): B's and A's rows are divided by a_jj
    once per call and A's diagonal is zeroed, so that a row costs one gemv, one subtraction
    and one clamp (-40 % per sweep on the CPU against the h_j + (b_j - a_j H) / a_jj form)."""
    # the k x k set-up in numpy on the host (~1 us per operation against torch's 3-6 us: a
    # dozen of them per call, two calls per chunk and pass)
    a = A.detach().cpu().numpy()
    diag = a.diagonal()
    # a component whose other factor vanished has no curvature: leave it alone, not divide by ~0
    rows = np.flatnonzero(diag > 1e-12 * max(float(diag.max()), _EPS)).tolist()
    inv = (1.0 / np.maximum(diag, _EPS)).astype(a.dtype)[:, None]
    a_scaled = a * inv
    np.fill_diagonal(a_scaled, 0.0)
    B_scaled = (B * torch.from_numpy(inv).to(B.device)).contiguous()
    A_scaled = torch.from_numpy(a_scaled).to(H.device)
    # numpy on the same memory on CPU: ~1 us per call instead of torch's ~5
    sweep = _sweep_numpy if H.device.type == "cpu" else _sweep_torch
    for _ in range(sweeps):
        sweep(H, B_scaled, A_scaled, rows)
    return H


def _sweep_numpy(H: torch.Tensor, B_scaled: torch.Tensor, A_scaled: torch.Tensor, rows: list[int]) -> None:
    h, b, a = H.numpy(), B_scaled.numpy(), A_scaled.numpy()
    for j in rows:
        row = h[j]
        np.subtract(b[j], a[j] @ h, out=row)
        np.maximum(row, 0.0, out=row)


def _sweep_torch(H: torch.Tensor, B_scaled: torch.Tensor, A_scaled: torch.Tensor, rows: list[int]) -> None:
    HT = H.T  # addmv on the transposed view: one fused gemv per row
    for j in rows:
        H[j] = torch.addmv(B_scaled[j], HT, A_scaled[j], alpha=-1.0).clamp_min_(0.0)


def _mu(M: torch.Tensor, numer: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    return M.mul_(numer.clamp_min(0.0) / denom.clamp_min(_EPS))


# ---------------------------------------------------------------- initialisation

def randomized_svd(chunks: list[Chunk], shape: tuple[int, int], k: int, gen: torch.Generator, device,
                   n_iter: int = 2, oversample: int = 10):
    """SVD of the row-stacked chunks on a random range of q = k + ``oversample`` columns
    (Halko et al.): ``U`` (n, q), ``S`` (q,), ``Vt`` (q, genes); the first k estimate the
    top-k, and all q are the rank-q sketch ``U S Vt`` of the data."""
    n, g = shape
    q = min(k + oversample, n, g)

    def X_mm(D):  # X @ D, (n, q)
        return torch.cat([c.mm(D) for c in chunks])

    def XT_mm(D):  # X^T @ D, (g, q)
        out, pos = torch.zeros(g, D.shape[1], device=device), 0
        for c in chunks:
            out += c.tmm(D[pos:pos + c.stop - c.start])
            pos += c.stop - c.start
        return out

    Y = X_mm(torch.randn(g, q, generator=gen).to(device))
    for _ in range(n_iter):
        Q, _ = torch.linalg.qr(Y)
        Y = X_mm(torch.linalg.qr(XT_mm(Q))[0])
    Q, _ = torch.linalg.qr(Y)
    U, S, Vt = torch.linalg.svd(XT_mm(Q).T, full_matrices=False)
    return Q @ U, S, Vt


def nndsvd(U, S, Vt, fill: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Boutsidis & Gallopoulos' NNDSVD from an SVD; zeros are filled with ``fill`` (nndsvda) if given."""
    W = torch.zeros(U.shape[0], len(S), device=U.device)
    H = torch.zeros(len(S), Vt.shape[1], device=U.device)
    for j in range(len(S)):
        u, v = U[:, j], Vt[j]
        if j == 0:  # the leading singular vectors of a non-negative matrix share one sign
            u, v = u.abs(), v.abs()
        else:
            up, un, vp, vn = u.clamp_min(0), (-u).clamp_min(0), v.clamp_min(0), (-v).clamp_min(0)
            pos = up.norm() * vp.norm()
            neg = un.norm() * vn.norm()
            u, v = (up, vp) if pos >= neg else (un, vn)
            scale = max(float(pos), float(neg))
            u, v = u / u.norm().clamp_min(_EPS) * math.sqrt(scale), v / v.norm().clamp_min(_EPS) * math.sqrt(scale)
        s = math.sqrt(float(S[j]))
        W[:, j], H[j] = s * u, s * v
    if fill is not None:
        W[W == 0] = fill
        H[H == 0] = fill
    return W, H


# ---------------------------------------------------------------- fitting

@dataclass
class Fit:
    W: list[torch.Tensor]  # per block, (n_b, k)
    H: torch.Tensor  # (k, genes)
    V: torch.Tensor  # (n_blocks, k, genes); zeros for plain NMF
    loss: list = field(default_factory=list)  # objective per cell, one value per pass over the cells
    seconds: list = field(default_factory=list)  # cumulative wall time at the end of each pass
    converged: bool = False
    shared_passes: int = 0  # iNMF: passes of its plain-NMF start, at the head of ``loss``
    # per pass over the rank-q sketch (SKETCH_TOL), not in ``loss``: 1/2 ||sketch - W H||^2
    # + 1/2 ||X - sketch||^2 per cell, an estimate of the objective
    sketch_loss: list = field(default_factory=list)
    sketch_at: int = 0  # passes over X (in ``loss``) before those over the sketch
    interrupted: bool = False  # Ctrl-C: the factors are those of the last finished update
    bar: object = field(default=None, repr=False, compare=False)  # the progress bar while fitting

    def history(self, loss_label: str) -> History:
        """The fit as a :class:`~scgen_ae.train.History`, one entry per pass over the cells:
        ``train_loss`` the objective, ``best_epoch`` the last pass, ``stopped_early`` whether
        it converged (a pass improved by less than ``tol``) before ``max_iter`` passes,
        ``seconds`` the whole fit's time, and in ``info`` ``pass_seconds`` (cumulative time
        at the end of each pass) and the NMF records ``converged`` (= ``stopped_early``),
        ``n_iter``, ``shared_passes``, ``sketch_loss``, ``sketch_at``, ``loss_label``."""
        return History(
            train_loss=list(self.loss), kl_weight=[1.0] * len(self.loss), best_epoch=len(self.loss) - 1,
            stopped_early=bool(self.converged), interrupted=bool(self.interrupted),
            seconds=float(self.seconds[-1]) if self.seconds else 0.0,
            info={"loss_label": loss_label, "pass_seconds": np.asarray(self.seconds, dtype=np.float64),
                  "n_iter": len(self.loss), "shared_passes": int(self.shared_passes),
                  "sketch_loss": np.asarray(self.sketch_loss, dtype=np.float64), "sketch_at": int(self.sketch_at),
                  "converged": bool(self.converged)})


def fit(blocks: list[sp.csr_matrix], k: int, *, chunk_size: int | None = None,
        device: torch.device | str = "cpu", **options) -> Fit:
    """Fit (i)NMF to the cells of ``blocks`` (one CSR per batch) in memory; see :func:`fit_chunks`."""
    device = torch.device(device)
    total = sum(float(X.data.sum(dtype=np.float64)) for X in blocks)
    return fit_chunks(make_chunks(blocks, chunk_size, device), [X.shape[0] for X in blocks], blocks[0].shape[1],
                      total, k, device=device, **options)


@torch.inference_mode()  # no autograd bookkeeping: half the dispatch cost of the many small ops per pass
def fit_chunks(chunks: Iterable[Chunk], block_sizes: list[int], n_genes: int, total: float, k: int, *,
               loss: str = "frobenius", solver: str = "hals", init: str = "nndsvda", max_iter: int = 200,
               tol: float = 1e-4, lam: float = 0.0, integrative: bool = False, sweeps: int = 3,
               extrapolate: bool = True, sketch: bool = True, seed: int = 0,
               device: torch.device | str = "cpu", progress: bool = False) -> Fit:
    """Fit (i)NMF to the cells in ``chunks`` (a list, or :class:`~._nmf_data.StreamedChunks` read on every
    pass); ``block_sizes``: cells per block, ``total``: sum of all values. See the module docstring.

    One iteration is one pass over all cells. Stops when the objective improves by less
    than ``tol`` (relative) over one pass, or after ``max_iter`` passes.

    iNMF (``integrative``) starts from the shared solution: plain NMF (``lam`` unused, V = 0)
    is fitted first, then the integrative objective from there (each phase up to ``max_iter``
    passes; ``Fit.shared_passes`` says where the second begins). Started cold from the SVD,
    iNMF let some components live in V alone (batch-only factors carrying cell-type
    signal: ||V_j|| / ||H_j|| of 10^2-10^3 on the PBMC chemistries) and the aligned
    factors lost bio conservation; from the shared start every V_j stays small and the
    result hardly depends on ``lam`` (BENCHMARKS.md).

    ``sketch``: plain Frobenius HALS fits of whole blocks in memory from an NNDSVD start pass
    over the start's rank-q sketch of the data after ``SKETCH_AFTER`` passes over it (see
    SKETCH_TOL; ``Fit.sketch_loss``, ``Fit.sketch_at``).

    ``progress``: the progress bar of :func:`scgen_ae.train.progress_bar`, one step per pass
    (over the cells or the sketch, each phase named), as ``sa.settings`` allow; it only
    reads the objective, so the fit is the same with it or without.
    """
    device = torch.device(device)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    n_cells = sum(block_sizes)
    in_memory_blocks = isinstance(chunks, list) and _one_chunk_per_block(chunks, block_sizes)
    power_iters = POWER_ITERS_WHOLE if in_memory_blocks else POWER_ITERS_CHUNKED
    W, H, svd = _initial(chunks, n_cells, n_genes, total, k, init, gen, device, power_iters)
    V = torch.zeros(len(block_sizes), k, n_genes, device=device)
    Ws = [w.contiguous() for w in torch.split(W, block_sizes)]
    # no total: the passes of each phase end at convergence, rarely at max_iter
    out = Fit(Ws, H, V, bar=progress_bar(None, "NMF", "pass", progress))
    try:
        if loss == "kl":
            _fit_kl(out, chunks, max_iter, tol, n_cells, start)
        else:
            on_sketch = sketch and not integrative and in_memory_blocks and svd is not None and solver == "hals"
            _fit_plain(out, chunks, svd if on_sketch else None, solver, max_iter, tol, sweeps, extrapolate,
                       n_cells, start)
            if integrative:
                out.shared_passes, out.converged = len(out.loss), False
                out.bar.set_description_str("iNMF", refresh=False)
                _fit_frobenius(out, chunks, solver, max_iter, tol, lam, True, sweeps, extrapolate, n_cells, start)
    except KeyboardInterrupt:
        out.interrupted = True
    finally:
        out.bar.close()
        out.bar = None
    return out


def _fit_plain(out: Fit, chunks, svd, solver, max_iter, tol, sweeps, extrapolate, n_cells, start) -> None:
    """Plain NMF (V = 0) on ``out``; with ``svd`` (U, S, Vt), via its sketch (SKETCH_AFTER)."""
    rest = (tol, 0.0, False, sweeps, extrapolate, n_cells, start)  # tol, lam, integrative, ...
    if svd is None or max_iter <= SKETCH_AFTER:
        _fit_frobenius(out, chunks, solver, max_iter, *rest)
        return
    _fit_frobenius(out, chunks, solver, SKETCH_AFTER, *rest)
    if out.converged or not math.isfinite(out.loss[-1]):
        return
    out.sketch_at = len(out.loss)
    _fit_sketch(out, chunks, svd, max_iter, max(tol / 10, SKETCH_TOL), sweeps, extrapolate, n_cells, start)
    _fit_frobenius(out, chunks, solver, max_iter - SKETCH_AFTER, *rest)


def _fit_sketch(out: Fit, chunks, svd, max_iter, tol, sweeps, extrapolate, n_cells, start) -> None:
    """Plain NMF on the rank-q sketch of the data, in place on ``out``'s factors."""
    sketch = sketch_chunks(chunks, *svd)
    on_sketch = Fit(out.W, out.H, out.V, bar=out.bar)
    out.bar.set_description_str("NMF (sketch)", refresh=False)
    _fit_frobenius(on_sketch, sketch, "hals", max_iter, tol, 0.0, False, sweeps, extrapolate, n_cells, start)
    out.bar.set_description_str("NMF", refresh=False)
    out.sketch_loss = on_sketch.loss


def _one_chunk_per_block(chunks, block_sizes: list[int]) -> bool:
    """Whether every block is a single chunk (empty blocks have none): a full-batch fit."""
    return len(chunks) == sum(n > 0 for n in block_sizes)


def _fit_frobenius(out: Fit, chunks, solver, max_iter, tol, lam, integrative, sweeps, extrapolate, n_cells, start):
    Ws, H, V = out.W, out.H, out.V
    n_blocks, k, n_genes = V.shape
    device = H.device
    online = not _one_chunk_per_block(chunks, [len(w) for w in Ws])
    # sufficient statistics per block: float64 when they are updated chunk by chunk, so that
    # the increments do not drift; full batch sets them whole from float32 products every pass
    # (float32 then holds exactly what float64 would, without the conversions)
    dtype = torch.float64 if online else torch.float32
    A = torch.zeros(n_blocks, k, k, dtype=dtype, device=device)
    B = torch.zeros(n_blocks, k, n_genes, dtype=dtype, device=device)
    sq_norm = 0  # summed in chunk order, as sum() did: one pass less when chunks are read from disk
    # online: each chunk's last X_c^T W_c (float32), so that swapping it for the new one in the
    # running B needs one sparse product per chunk, not two (X_c^T W_new and X_c^T (W_new - W_old))
    kept = {} if online and len(chunks) * k * n_genes * 4 <= KEPT_BYTES else None
    for c in chunks:
        w = Ws[c.block][c.start:c.stop]
        A[c.block] += (w.T @ w).to(dtype)
        contribution = c.tmm(w).T
        B[c.block] += contribution.to(dtype)
        if kept is not None and len(w) < len(Ws[c.block]):  # a whole-block chunk sets B[b] directly
            kept[c.block, c.start] = contribution
        sq_norm += c.sq_norm
    own = V if integrative else None  # plain NMF: V stays 0, and no work is spent on it
    gene_sweeps = sweeps if solver == "hals" else 1
    # extrapolation of the loadings (Ang & Gillis 2019): plain NMF with HALS only; with iNMF it
    # let the batch-specific loadings grow without bound on cellbench_3cl
    beta, prev = 0.5, None
    for it in range(max_iter):
        # online: W^T X summed from this pass's new factors, exact at its end (full batch: B is)
        fresh = torch.zeros_like(B) if online else None
        for c in chunks:
            b = c.block
            Hb = H + V[b] if integrative else H
            G = Hb @ Hb.T + lam * V[b] @ V[b].T if integrative else Hb @ Hb.T
            R = c.mm(Hb.T)
            old = Ws[b][c.start:c.stop]
            new = hals_columns(old.clone(), R, G, sweeps) if solver == "hals" else _mu(old.clone(), R, old @ G)
            contribution = c.tmm(new).T
            if fresh is not None:
                fresh[b] += contribution.double()
            if c.stop - c.start == Ws[b].shape[0]:  # the chunk is the whole block: set, not updated
                A[b], B[b] = new.T @ new, contribution
            else:  # online: this pass's running statistics, by increments
                A[b] += (new.T @ new - old.T @ old).double()
                if kept is not None:
                    B[b] += contribution.double() - kept[b, c.start].double()
                    kept[b, c.start] = contribution
                else:
                    B[b] += c.tmm(new - old).T.double()
            Ws[b][c.start:c.stop] = new
            _update_genes(H, V, A, B, b, lam, integrative, solver, gene_sweeps)
        # Increments carry float32 round-off of their own size: summed over passes, it
        # swamped the rows of components whose factors shrank (relative error 3e-3 after
        # one pass on cellbench_3cl), and the extrapolation and balancing then drove the fit
        # to diverge after ~130 passes. Each pass therefore restarts from exact statistics.
        if fresh is not None:
            B.copy_(fresh)
        scale = _balance(Ws, H, own, A, B, prev)
        for contribution in (kept or {}).values():
            contribution.mul_(scale[:, None])
        if _end_of_pass(out, objective(A, B, H, own, lam, sq_norm) / n_cells, start, tol):
            break
        if extrapolate and solver == "hals" and not integrative and it < max_iter - 1:
            # the next pass starts from H + beta (H - H_prev): grow beta while the objective
            # falls, shrink it (and skip one step) when it rises
            improved = len(out.loss) < 2 or out.loss[-1] < out.loss[-2]
            beta = min(1.0, beta * 1.1) if improved else beta / 2.0
            current = H.clone()
            if prev is not None and improved:
                H.add_(H - prev, alpha=beta).clamp_min_(0.0)
            prev = current


def _end_of_pass(out: Fit, loss: float, start: float, tol: float) -> bool:
    """Record a pass's objective and time; True when the fit stops (converged, or diverged)."""
    out.loss.append(loss)
    out.seconds.append(time.perf_counter() - start)
    out.converged = _converged(out.loss, tol)
    if out.bar is not None:
        out.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)  # drawn with the update, at the bar's pace
        out.bar.update()
    return out.converged or not math.isfinite(loss)


def _converged(loss: list[float], tol: float) -> bool:
    """The last pass lowered the objective, by less than ``tol`` (relative). A rise (an
    extrapolation step that overshot, or round-off) says nothing about convergence: counted,
    it stopped two of the four shared data sets' fits at tol 1e-8 on a rise."""
    if len(loss) < 2:
        return False
    drop = loss[-2] - loss[-1]
    return 0.0 <= drop < tol * abs(loss[-2])


def _balance(Ws, H, V, A, B, prev) -> torch.Tensor:
    """Rescale W_j by d_j and (H_j, V_j) by 1/d_j so both have the same norm: W H is unchanged,
    but neither factor drifts towards float32 over- or underflow. Returns d (k,).
    V None: plain NMF; ``prev``: the previous loadings kept for extrapolation, or None."""
    w_norm = torch.sqrt(sum((w * w).sum(0) for w in Ws))
    h_sq = (H * H).sum(1)
    h_norm = torch.sqrt(h_sq if V is None else h_sq + (V * V).sum((0, 2)))
    # a (nearly) dead component is left alone: scaling it up would also scale up the
    # round-off in its row of B (relative to a row that is ~0)
    ok = (w_norm > 1e-6 * w_norm.max()) & (h_norm > 1e-6 * h_norm.max())
    d = torch.where(ok, torch.sqrt(h_norm / w_norm.clamp_min(_EPS)), torch.ones_like(w_norm))
    for w in Ws:
        w.mul_(d)
    for M in (H, V, prev):
        if M is not None:
            M.div_(d[:, None])
    B.mul_(d.to(B.dtype)[:, None])
    for b, w in enumerate(Ws):  # exact again (cheap: cells x k^2), so chunk-wise round-off cannot pile up
        A[b] = w.T @ w
    return d


def objective(A, B, H, V, lam, sq_norm) -> float:
    """sum_b 1/2 ||X_b - W_b (H + V_b)||^2 + lam/2 ||W_b V_b||^2 from the statistics (exact);
    V None: plain NMF, 1/2 ||X - W H||^2."""
    Hb = (H[None] if V is None else H[None] + V).double()
    fit = sq_norm - 2.0 * float((B * Hb).sum()) + float((A * (Hb @ Hb.transpose(1, 2))).sum())
    if V is None:
        return 0.5 * fit
    Vd = V.double()
    return 0.5 * (fit + lam * float((A * (Vd @ Vd.transpose(1, 2))).sum()))


def _update_genes(H, V, A, B, b, lam, integrative, solver, sweeps) -> None:
    """Shared loadings from all blocks' statistics; then block b's own loadings (iNMF)."""
    Af, Bf = A.float(), B.float()
    if integrative:
        rhs = (Bf - Af @ V).sum(0)
        gram = Af.sum(0)
        hals_rows(H, rhs, gram, sweeps)
        hals_rows(V[b], Bf[b] - Af[b] @ H, (1.0 + lam) * Af[b], sweeps)
    elif solver == "hals":
        hals_rows(H, Bf.sum(0), Af.sum(0), sweeps)
    else:
        _mu(H, Bf.sum(0), Af.sum(0) @ H)


def _initial(chunks, n, g, total, k, init, gen, device, power_iters: int = POWER_ITERS_CHUNKED):
    """Start (W, H), and the randomized SVD (U, S, Vt) it came from (None for ``init="random"``)."""
    mean = total / (n * g)
    if init == "random":
        scale = math.sqrt(mean / k)
        W = (torch.randn(n, k, generator=gen).abs() * scale).to(device)
        H = (torch.randn(k, g, generator=gen).abs() * scale).to(device)
        return W, H, None
    U, S, Vt = randomized_svd(chunks, (n, g), k, gen, device, n_iter=power_iters)
    W, H = nndsvd(U[:, :k], S[:k], Vt[:k], fill=mean if init == "nndsvda" else None)
    return W, H, (U, S, Vt)


def _fit_kl(out: Fit, chunks, max_iter: int, tol: float, n_cells: int, start: float) -> None:
    """Multiplicative updates for the generalised KL divergence (plain NMF, one block)."""
    H = out.H
    W = out.W[0]
    for _ in range(max_iter):
        for c in chunks:  # W step, chunk by chunk (rows are independent given H)
            w = W[c.start:c.stop]
            ratio = c.X.values() / c.at_nonzeros(w, H).clamp_min(_EPS)
            _mu(w, c.mm_values(ratio, H.T), H.sum(1)[None, :])
        numer = torch.zeros_like(H.T)
        kl_nz = 0.0
        for c in chunks:  # H step with the new W, and the objective on the way
            w = W[c.start:c.stop]
            x, wh = c.X.values(), c.at_nonzeros(w, H).clamp_min(_EPS)
            kl_nz += float((x * torch.log(x / wh) - x).sum())
            numer += c.tmm_values(x / wh, w)  # (genes, k)
        total = kl_nz + float(W.sum(0) @ H.sum(1))
        _mu(H, numer.T, W.sum(0)[:, None])
        if _end_of_pass(out, total / n_cells, start, tol):
            break


@torch.inference_mode()
def solve_cells(X: sp.csr_matrix, H: torch.Tensor, Vb: torch.Tensor, lam: float, loss: str,
                max_iter: int = 200, tol: float = 1e-5, chunk_size: int = 4096) -> torch.Tensor:
    """Cell factors (cells x k) of X with the loadings fixed (``H + Vb``), chunk by chunk.

    Frobenius: non-negative least squares by HALS from the clipped unconstrained solution;
    KL: multiplicative updates. Stops when the factors change by less than ``tol`` (relative).
    """
    device = H.device
    Hb = H + Vb
    out = []
    for c in make_chunks([X], chunk_size, device):
        if loss == "kl":
            W = torch.full((c.stop - c.start, H.shape[0]), float(c.X.values().mean()) / max(float(Hb.sum()), _EPS),
                           device=device) if c.X.values().numel() else torch.zeros(c.stop - c.start, H.shape[0])
            colsum = Hb.sum(1)[None, :]
        else:
            G = Hb @ Hb.T + lam * Vb @ Vb.T
            R = c.mm(Hb.T)
            W = (R @ torch.linalg.pinv(G)).clamp_min(0.0)
        for _ in range(max_iter):
            before = W.clone()
            if loss == "kl":
                ratio = c.X.values() / c.at_nonzeros(W, Hb).clamp_min(_EPS)
                _mu(W, c.mm_values(ratio, Hb.T), colsum)
            else:
                W = hals_columns(W, R, G, 1)
            if float((W - before).norm()) <= tol * max(float(W.norm()), _EPS):
                break
        out.append(W)
    return torch.cat(out) if out else torch.zeros(0, H.shape[0], device=device)
