"""The one training loop every model uses.

A model's torch module only has to provide ``loss(minibatch, kl_weight)`` returning a
:class:`~scgen_ae.losses.LossRecord` (the objective, its terms and what validation watches;
a bare scalar tensor is read as the objective alone), and ``has_kl = False`` when it has no
KL term (then no warm-up: every epoch counts for early stopping).
Everything else -- epochs, minibatches, validation, early stopping, KL warm-up,
gradient clipping, divergence detection, Ctrl-C, progress bar -- lives here.
"""
from __future__ import annotations

import copy
import math
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from . import _validate, checkpoint
from ._settings import progress_bar_class, settings
from .data import CellData, train_validation_split
from .distributed import shard
from .io import model_path
from .likelihoods import get_likelihood
from .losses import LossRecord


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the module holds the last good weights."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train; every model front forwards these keyword arguments."""

    max_epochs: int | None = None  # None: scvi-tools' heuristic, min(400, 400 * 20000 / n_cells)
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-6
    validation_fraction: float = 0.1
    early_stopping: bool = True
    patience: int = 30
    min_delta: float = 0.0
    kl_warmup_epochs: int | None = None  # None: a third of max_epochs, capped at 400; ignored without a KL term
    grad_clip: float = 50.0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # "bf16": matmuls in bfloat16 autocast (likelihoods stay fp32); "fp32"; "auto"
    n_threads: int | None = None  # None: sa.settings.n_threads, else every usable core
    progress: bool = True
    # scale: checkpoint / resume and data-parallel training (scgen_ae/distributed.py)
    checkpoint_path: str | None = None  # write a checkpoint here (.npz) every checkpoint_every epochs
    checkpoint_every: int = 1
    resume: bool = False  # continue from checkpoint_path when it exists (else start afresh)
    devices: int = 1  # processes per node (one per GPU); > 1 needs torchrun
    num_nodes: int = 1

    def __post_init__(self):
        # checked where the options are collected, so every front refuses them before any work
        _validate.check_train_options(self)

    def epochs_for(self, n_cells: int) -> int:
        if self.max_epochs is not None:
            return int(self.max_epochs)
        return int(min(400, round(400 * 20000 / max(n_cells, 1))))


def train_config(**options) -> TrainConfig:
    """A :class:`TrainConfig` whose ``seed`` and ``device``, unless given, come from ``sa.settings``
    (``n_threads`` and the progress bar follow the settings when training starts)."""
    options.setdefault("seed", settings.seed)
    options.setdefault("device", settings.device)
    return TrainConfig(**options)


@dataclass
class History:
    """Per-epoch mean losses. Serialisable to ``uns`` via :meth:`as_dict`.

    Attributes
    ----------
    train_loss, validation_loss
        Per-epoch means over cells of the objective (``total``) in training and of the
        watched value (``monitor``) on the validation cells.
    kl_weight
        The KL warm-up weight of each epoch (1 throughout for models without a KL term).
    terms
        The per-epoch means of each term of the :class:`~scgen_ae.losses.LossRecord`,
        keyed ``train_<term>`` / ``validation_<term>`` (``train_reconstruction``,
        ``train_kl``, ``train_alignment``, ...). A term a minibatch lacks counts as 0
        there, so the terms combine to the total as in each minibatch.
    info
        Values particular to one model, written by :meth:`as_dict` as given after the
        terms (NMF: ``loss_label``, ``n_iter``, ``converged``, ``pass_seconds``, ...; see
        :func:`scgen_ae.tl.nmf`). Empty for the neural models.

    Models fitted by passes over all cells (NMF, classic LDA) record one entry per pass:
    ``best_epoch`` is the last pass, and ``stopped_early`` means the fit converged (its
    stopping rule held) before its ``max_iter`` passes (classic LDA has no such rule: False).
    """

    train_loss: list = field(default_factory=list)
    validation_loss: list = field(default_factory=list)
    kl_weight: list = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    interrupted: bool = False
    seconds: float = 0.0
    terms: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def add_terms(self, prefix: str, means: dict[str, float], n_epochs: int) -> None:
        """Record one epoch's term means under ``<prefix>_<term>``; ``n_epochs``: the epochs
        recorded under ``prefix`` with this one (a term first seen now is 0 before)."""
        for name in means:
            self.terms.setdefault(f"{prefix}_{name}", [0.0] * (n_epochs - 1))
        for key, values in self.terms.items():
            if key.startswith(prefix + "_"):
                values.append(float(means.get(key[len(prefix) + 1:], 0.0)))

    def restore(self, record: dict) -> None:
        """Take the values of an :meth:`as_dict` record (e.g. from a checkpoint)."""
        fields = set(self.__dataclass_fields__) - {"terms", "info"}
        for key, value in record.items():
            if key in fields:
                setattr(self, key, list(value) if isinstance(value, (list, np.ndarray)) else value)
            elif key.startswith(("train_", "validation_")):
                self.terms[key] = list(value)
            else:
                self.info[key] = value

    def as_dict(self) -> dict:
        """Arrays and scalars by key: the fields, then the :attr:`terms`."""
        return {
            "train_loss": np.asarray(self.train_loss, dtype=np.float64),
            "validation_loss": np.asarray(self.validation_loss, dtype=np.float64),
            "kl_weight": np.asarray(self.kl_weight, dtype=np.float64),
            "best_epoch": int(self.best_epoch),
            "stopped_early": bool(self.stopped_early),
            "interrupted": bool(self.interrupted),
            "seconds": float(self.seconds),
            **{key: np.asarray(values, dtype=np.float64) for key, values in self.terms.items()},
            **self.info,
        }


def warn_interrupted(holds: str, verb: str = "Training", stacklevel: int = 3) -> None:
    """The warning of every front whose fit was stopped by Ctrl-C (``History.interrupted``):
    ``adata`` was left unchanged, and the returned model holds ``holds``."""
    warnings.warn(f"{verb} was interrupted (Ctrl-C): adata was left unchanged. The returned model holds {holds}",
                  stacklevel=stacklevel)


def progress_bar(iterable, desc: str, unit: str, requested: bool = True, hidden: bool = False):
    """The progress bar of every fit: tqdm's (see :func:`~scgen_ae._settings.progress_bar_class`),
    drawn when ``requested`` and ``sa.settings`` allow it (:meth:`~scgen_ae._settings.Settings.show_progress`)
    and not ``hidden`` (e.g. on the ranks other than 0 of a data-parallel run). ``iterable`` None:
    a bar without a total, advanced by its ``update()`` (NMF, whose phases end at convergence)."""
    # in a log file (CI, nohup) each refresh is a new line: refresh every 30 s there, not 10x/s
    interactive = getattr(sys.stderr, "isatty", lambda: False)() or "ipykernel" in sys.modules
    return progress_bar_class()(iterable, desc=desc, unit=unit, leave=False, mininterval=0.1 if interactive else 30.0,
                                disable=not settings.show_progress(requested) or hidden)


def resolve_device(device: str) -> torch.device:
    _validate.check_device(device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


@contextmanager
def seeded_threads(seed: int, n_threads: int | None):
    """Seed torch inside a forked RNG state and set its thread count; restore both after.

    The threads are set on every run (``n_threads``, else ``sa.settings.n_threads``, else every
    usable core), not only when asked: other libraries change torch's count under the user
    (numba through ``sc.pp.highly_variable_genes`` left one thread, training 7x slower).
    """
    old_threads = torch.get_num_threads()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.set_num_threads(settings.threads(n_threads))
        try:
            yield
        finally:
            torch.set_num_threads(old_threads)


def _bf16_is_native(device: torch.device) -> bool:
    """bf16 matmuls pay off only where the hardware has them (AVX512-BF16/AMX, Ampere+)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # not mkldnn's bf16 check: it says yes on any AVX-512 CPU, where bf16 is emulated and
        # training ran 2x slower than in fp32 (Xeon without avx512_bf16; BENCHMARKS.md, speed section)
        try:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except AttributeError:
            return False
    return False


def _autocast(config: TrainConfig, device: torch.device):
    """Matmuls in bfloat16 where native ("auto"): measured to leave the validation ELBO
    unchanged to 0.1 nats/cell (BENCHMARKS.md); the likelihood always runs in fp32."""
    if config.precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision={config.precision!r}; choose 'auto', 'fp32' or 'bf16'.")
    use = config.precision == "bf16" or (config.precision == "auto" and _bf16_is_native(device))
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use)


def _record(loss) -> LossRecord:
    """A module's loss as a record: a bare scalar is the objective alone; a dict holds the
    record's fields (what the data-parallel wrapper returns)."""
    if isinstance(loss, dict):
        return LossRecord(**loss)
    return loss if isinstance(loss, LossRecord) else LossRecord(total=loss, reconstruction=loss)


def _add_terms(sums: dict[str, float], record: LossRecord, n: int) -> None:
    for name, value in record.terms().items():
        sums[name] = sums.get(name, 0.0) + float(value.detach()) * n


def _loss_sum(module, data: CellData, idx, config, kl_weight, device) -> tuple[float, int, dict[str, float]]:
    """(sum of per-cell watched losses, cells, sums of the terms) over ``idx``, in eval mode
    (the unwrapped module: no DDP sync)."""
    module.eval()
    total, n, terms = 0.0, 0, {}
    batch_size = config.batch_size
    with torch.no_grad(), _autocast(config, device):
        for mb in data.iterate(idx, max(batch_size, 1024), drop_last_if_tiny=False):
            record = _record(module.loss(mb.to(device), kl_weight))
            total += float(record.monitor) * mb.x.shape[0]
            _add_terms(terms, record, mb.x.shape[0])
            n += mb.x.shape[0]
    return total, n, terms


def _epoch_terms(dist, sums: dict[str, float], n: int) -> dict[str, float]:
    """Per-cell means of the term sums (summed over the processes first)."""
    names = sorted(sums)
    if dist:
        *values, n = dist.all_sum([sums[k] for k in names] + [n])
    else:
        values = [sums[k] for k in names]
    return {k: float(v) / max(n, 1) for k, v in zip(names, values)}


def _divergence_message(epoch: int, lr: float, likelihood: str | None) -> str:
    counts = False
    if likelihood is not None:
        try:
            counts = get_likelihood(likelihood).counts
        except ValueError:  # a name of no registered likelihood: no advice about it
            pass
    hint = (
        "Count likelihoods need raw integer counts: if X holds log-normalised values pass "
        "layer='counts' (or likelihood='gaussian'). "
        if counts else ""
    )
    return (
        f"The training loss became NaN/Inf in epoch {epoch}. The model was restored to the last "
        f"weights with a finite loss. Likely causes: {hint}a learning rate too high for this data "
        f"(lr={lr:g}; try lr={lr / 10:g}); extreme outlier cells (check library sizes)."
    )


def _restore(path, module, optimizer, history: History, expect: dict, dist) -> tuple[dict, dict | None]:
    """Load a checkpoint into ``module``, ``optimizer`` and ``history``; return (loop state, rng state)."""
    ckpt = checkpoint.load(path, expect)
    module.load_state_dict(ckpt["weights"])
    optimizer.load_state_dict(ckpt["optimizer"])
    history.restore(ckpt["history"])
    torch.set_rng_state(torch.from_numpy(ckpt["torch_rng"][dist.rank if dist else 0].copy()))
    loop = ckpt["loop"]
    loop["best_state"] = ckpt["best_state"]
    return loop, ckpt["rng"]


def _save(config, module, optimizer, history, loop, rng, dist) -> None:
    torch_rng = torch.get_rng_state().numpy()
    torch_rng = dist.gather(torch_rng) if dist else torch_rng[None]
    if dist is None or dist.rank == 0:
        checkpoint.save(config.checkpoint_path, module=module, optimizer=optimizer, best_state=loop["best_state"],
                        history=history.as_dict(), rng_state=rng.bit_generator.state if dist is None else None,
                        loop={k: v for k, v in loop.items() if k != "best_state"}, torch_rng=torch_rng)
    if dist:
        dist.barrier()


def _epoch_loss(dist, total: float, n: int) -> float:
    if dist:
        total, n = dist.all_sum([total, n])
    return total / max(n, 1)


def kl_warmup(config: TrainConfig, n_epochs: int, module: torch.nn.Module) -> int:
    """The epochs over which :func:`fit` raises the KL weight to 1 (0: none, or no KL term)."""
    if not getattr(module, "has_kl", True):  # nothing to warm up: every epoch's loss is comparable
        return 0
    return config.kl_warmup_epochs if config.kl_warmup_epochs is not None else min(400, max(1, n_epochs // 3))


def fit(module: torch.nn.Module, data: CellData, config: TrainConfig, likelihood: str | None = None,
        on_epoch_end=None) -> History:
    """Train ``module`` on ``data`` in place and return its :class:`History`.

    ``data`` is a :class:`CellData` or anything with its interface (``n_cells``,
    ``minibatch``, ``iterate``), e.g. :class:`scgen_ae.ondisk.OnDiskCellData`.
    The module ends on the weights of the best validation epoch (or the last epoch
    without validation). Raises :class:`TrainingDivergedError` on a NaN/Inf loss.
    With ``config.checkpoint_path`` the run is checkpointed every ``checkpoint_every``
    epochs and, with ``config.resume``, continues from that checkpoint; with
    ``devices * num_nodes > 1`` it runs data-parallel (see :mod:`scgen_ae.distributed`).
    ``on_epoch_end(epoch)``, where given, is called after each epoch; it returns True when
    it changed the objective, so that the best epoch and early stopping count from there.
    """
    import time

    dist = None
    if config.devices * config.num_nodes > 1:
        from .distributed import Distributed

        dist = Distributed(resolve_device(config.device).type, config.devices, config.num_nodes)
        torch.manual_seed(config.seed + dist.rank)  # same init is broadcast by DDP; noise differs per rank
    device = dist.device if dist else resolve_device(config.device)
    module.to(device)
    rng = np.random.default_rng(config.seed)
    train_idx, val_idx = train_validation_split(data.n_cells, config.validation_fraction, rng)
    if dist:
        val_idx = np.array_split(val_idx, dist.world)[dist.rank]
    n_epochs = config.epochs_for(data.n_cells)
    warmup = kl_warmup(config, n_epochs, module)
    history = History()
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay, eps=0.01,
                                 fused=device.type in ("cpu", "cuda"))
    runner = module
    if dist:
        runner, optimizer = dist.wrap(module, optimizer)
    loop = {"epoch": -1, "best_loss": math.inf, "since_best": 0, "best_state": None, "n_cells": int(data.n_cells),
            "n_train": int(len(train_idx)), "seed": int(config.seed), "batch_size": int(config.batch_size),
            "world_size": dist.world if dist else 1}
    if config.resume and config.checkpoint_path and model_path(config.checkpoint_path).exists():
        restored, rng_state = _restore(config.checkpoint_path, module, optimizer, history, loop, dist)
        loop.update(restored)
        if rng_state is not None:
            rng.bit_generator.state = rng_state
    good_state = copy.deepcopy(module.state_dict())
    start = time.perf_counter() - history.seconds
    first = loop["epoch"] + 1 if not history.stopped_early else n_epochs
    bar = progress_bar(range(first, n_epochs), "training", "epoch", config.progress,
                       hidden=dist is not None and dist.rank != 0)
    try:
        for epoch in bar:
            kl_weight = min(1.0, (epoch + 1) / warmup) if warmup > 0 else 1.0
            module.train()
            total, n, terms = 0.0, 0, {}
            idx, epoch_rng = train_idx, rng
            if dist:
                idx = shard(train_idx, getattr(data, "chunk_size", 1), config.seed, epoch, dist.rank, dist.world)
                epoch_rng = np.random.default_rng([config.seed, epoch, dist.rank])
            for mb in data.iterate(idx, config.batch_size, epoch_rng):
                with _autocast(config, device):
                    record = _record(runner.loss(mb.to(device), kl_weight))
                loss = record.total
                if dist is None and not torch.isfinite(loss):
                    module.load_state_dict(good_state)
                    raise TrainingDivergedError(_divergence_message(epoch, config.lr, likelihood))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
                if dist is not None and not torch.isfinite(norm):  # all-reduced: every rank sees it
                    module.load_state_dict(good_state)
                    raise TrainingDivergedError(_divergence_message(epoch, config.lr, likelihood))
                optimizer.step()
                total += float(loss.detach()) * mb.x.shape[0]
                _add_terms(terms, record, mb.x.shape[0])
                n += mb.x.shape[0]
            good_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            history.train_loss.append(_epoch_loss(dist, total, n))
            history.kl_weight.append(kl_weight)
            history.add_terms("train", _epoch_terms(dist, terms, n), len(history.train_loss))
            monitored = history.train_loss[-1]
            if len(train_idx) < data.n_cells:
                # validation: the module's monitor (the VAE's negative ELBO) at full KL weight,
                # z at the posterior mean
                val_total, val_n, val_terms = _loss_sum(module, data, val_idx, config, 1.0, device)
                monitored = _epoch_loss(dist, val_total, val_n)
                history.validation_loss.append(monitored)
                history.add_terms("validation", _epoch_terms(dist, val_terms, val_n), len(history.validation_loss))
            bar.set_postfix(loss=f"{history.train_loss[-1]:.1f}",
                            val=f"{monitored:.1f}" if len(train_idx) < data.n_cells else "-",
                            refresh=False)  # drawn with the next update, at the bar's own pace
            # only compare losses once the KL weight is fixed: earlier ones are not comparable
            stop = False
            if kl_weight >= 1.0 and monitored < loop["best_loss"] - config.min_delta:
                loop.update(best_loss=monitored, best_state=good_state, since_best=0)
                history.best_epoch = epoch
            elif kl_weight >= 1.0:
                loop["since_best"] += 1
                stop = config.early_stopping and loop["since_best"] >= config.patience
            if dist:
                stop = dist.any(stop)  # equal on every rank already; made certain
            if on_epoch_end is not None and on_epoch_end(epoch):
                # losses under the old objective are not comparable with the new one
                loop.update(best_loss=math.inf, best_state=None, since_best=0)
                stop = False
            history.stopped_early = stop
            loop["epoch"] = epoch
            if config.checkpoint_path and (stop or (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == n_epochs):
                history.seconds = time.perf_counter() - start
                _save(config, module, optimizer, history, loop, rng, dist)
            if stop:
                break
    except KeyboardInterrupt:
        history.interrupted = True
    finally:
        bar.close()
    if loop["best_state"] is not None:
        module.load_state_dict(loop["best_state"])
    else:
        module.load_state_dict(good_state)
        history.best_epoch = len(history.train_loss) - 1
    if dist:
        dist.broadcast_state(module)
    module.eval()
    history.seconds = time.perf_counter() - start
    return history
