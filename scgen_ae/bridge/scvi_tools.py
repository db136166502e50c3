"""scvi-tools behind scgen_ae's fronts: SCVI, LinearSCVI and AmortizedLDA as pure adapters.

Each ``fit_*`` function takes an AnnData with counts (already validated by the front),
trains the scvi-tools model on a private AnnData (``setup_anndata`` writes into the
object it is given, and the caller's must stay untouched) and returns arrays plus a
history with the field names of :class:`scgen_ae.train.History`. Writing to the caller's
AnnData is left to the front (``tl.vae(backend="scvi-tools")``; ``tl.lda`` at merge).

scvi-tools is an optional extra: ``pip install "scgen-ae[scvi]"``.
"""
from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from anndata import AnnData

from .. import _validate as v
from ..likelihoods import get_likelihood, likelihood_names
from ..models.vae import VAEConfig
from ..train import History, TrainConfig, resolve_device, seeded_threads

INSTALL_HINT = ('backend="scvi-tools" needs scvi-tools, an optional extra: pip install "scgen-ae[scvi]" '
                '(or pip install scvi-tools).')
_BATCH = "_scgen_ae_batch"

#: tl.vae options with no scvi-tools counterpart: accepted at their default or off (and then
#: recorded with the value that ran), refused otherwise. name -> (native default, off value).
NATIVE_ONLY = {"batch_gene_offsets": (True, False), "mmd_weight": (1.0, 0.0),
               "covariate_independence_weight": (VAEConfig.covariate_independence_weight, 0.0)}
#: LinearSCVI's encoder takes no covariates, so encode_batch joins the list for it.
NATIVE_ONLY_LINEAR = {**NATIVE_ONLY, "encode_batch": (True, False)}
_PRECISION = {"auto": 32, "fp32": 32, "bf16": "bf16-mixed"}


def import_scvi():
    """Import scvi-tools or explain how to install it."""
    try:
        import scvi
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return scvi


@dataclass
class ScviFit:
    """What an adapter returns: the arrays, a history dict and the trained scvi-tools model."""

    latent: np.ndarray  # (n_cells, n_latent) posterior means, or topic proportions for LDA
    history: dict
    model: object
    loadings: np.ndarray | None = None  # (n_genes, n_latent) LinearSCVI / (n_topics, n_genes) LDA
    not_applied: dict = field(default_factory=dict)


# ---------------------------------------------------------------- argument mapping

def native_only_values(options: dict, linear_decoder: bool) -> dict:
    """Check the tl.vae options scvi-tools has no counterpart for; return the values that run."""
    table = NATIVE_ONLY_LINEAR if linear_decoder else NATIVE_ONLY
    ran = {}
    for name, (default, off) in table.items():
        if name not in options:
            continue
        if options[name] not in (default, off):
            model = "LinearSCVI" if linear_decoder else "SCVI"
            raise v.InputError(
                f"{name}={options[name]!r} has no counterpart in scvi-tools' {model} "
                f"(backend='scvi-tools'); leave it at its default or set {name}={off!r}, "
                "or use backend='native'.")
        ran[name] = off
    return ran


def vae_arguments(*, likelihood: str, dispersion: str, n_latent: int, n_hidden: int, n_layers: int,
                  dropout_rate: float, beta: float, encode_batch: bool, linear_decoder: bool,
                  train: TrainConfig, n_cells: int) -> tuple[dict, dict]:
    """Map tl.vae's arguments to (model kwargs, ``model.train`` kwargs) of SCVI / LinearSCVI."""
    known = {name: get_likelihood(name).scvi_name for name in likelihood_names()}
    if known.get(likelihood) is None:
        paired = ", ".join(name for name, scvi in known.items() if scvi is not None)
        raise v.InputError(f"likelihood={likelihood!r} has no counterpart in scvi-tools' SCVI ({paired}); "
                           "use backend='native' for it.")
    if dispersion not in ("gene", "gene-batch"):
        raise ValueError(f"dispersion={dispersion!r}; choose 'gene' or 'gene-batch'.")
    if train.precision not in _PRECISION:
        raise ValueError(f"precision={train.precision!r}; choose one of {sorted(_PRECISION)}.")
    model = dict(n_latent=n_latent, n_hidden=n_hidden, n_layers=n_layers, dropout_rate=dropout_rate,
                 dispersion=dispersion, gene_likelihood=known[likelihood])
    if not linear_decoder:
        model["encode_covariates"] = bool(encode_batch)
    max_epochs = train.epochs_for(n_cells)  # the same heuristic as scvi-tools' own default
    warmup = train.kl_warmup_epochs
    if warmup is None:  # tl.vae's default: a third of the epochs, at most 400
        warmup = min(400, max(1, max_epochs // 3))
    device = resolve_device(train.device)  # refuses cuda without CUDA, like the native backend
    fit = dict(
        max_epochs=max_epochs, batch_size=train.batch_size, early_stopping=train.early_stopping,
        accelerator="gpu" if device.type == "cuda" else device.type, devices=1,
        enable_progress_bar=bool(train.progress), precision=_PRECISION[train.precision],
        gradient_clip_val=train.grad_clip,
        plan_kwargs={"lr": train.lr, "weight_decay": train.weight_decay, "max_kl_weight": float(beta),
                     "n_epochs_kl_warmup": int(warmup)},
    )
    if train.validation_fraction > 0:
        fit["train_size"] = 1.0 - train.validation_fraction
        fit["check_val_every_n_epoch"] = 1
    else:
        fit["train_size"] = 1.0
    if train.early_stopping:
        fit.update(early_stopping_patience=train.patience, early_stopping_min_delta=train.min_delta)
    return model, fit


# ---------------------------------------------------------------- running scvi-tools quietly and reproducibly

@contextmanager
def _quiet(progress: bool):
    """scvi-tools and lightning log at INFO ("GPU available", tips); keep that for progress=True."""
    names = ("scvi", "lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")
    old = {n: logging.getLogger(n).level for n in names}
    if not progress:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in old.items():
            logging.getLogger(n).setLevel(level)


@contextmanager
def _seeded(scvi, seed: int, n_threads: int | None):
    """``scvi.settings.seed`` seeds every global RNG (lightning's seed_everything): restore
    numpy's and Python's afterwards, fork torch's, as the native training loop does."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with seeded_threads(seed, n_threads):
        scvi.settings.seed = int(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _private_counts(adata: AnnData, layer: str | None, batch_key: str | None, covariates=None) -> AnnData:
    """Counts (validated CSR float32), the batch column and the covariates' columns (as
    validated by ``covariates``, a :class:`~scgen_ae.covariates.CovariateSpec`) on an AnnData
    of our own."""
    X = v.get_matrix(adata, layer)
    private = AnnData(X.copy())
    private.obs_names = adata.obs_names.astype(str)
    private.var_names = adata.var_names.astype(str)
    if batch_key is not None:
        private.obs[_BATCH] = adata.obs[batch_key].astype(str).astype("category").to_numpy()
    for key in covariates.categorical_keys if covariates else ():
        private.obs[key] = adata.obs[key].astype(str).astype("category").to_numpy()
    for key in covariates.continuous_keys if covariates else ():
        private.obs[key] = adata.obs[key].to_numpy(dtype=np.float64)
    return private


def _epoch_recorder():
    """A lightning callback that records each epoch's KL weight and the training-loop time."""
    from lightning.pytorch.callbacks import Callback

    class EpochRecorder(Callback):
        def __init__(self):
            self.kl_weight, self.start, self.end = [], None, None

        def on_train_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.kl_weight.append(float(getattr(pl_module, "kl_weight", np.nan)))

        def on_train_end(self, trainer, pl_module):
            self.end = time.perf_counter()

        @property
        def seconds(self) -> float:
            return (self.end or time.perf_counter()) - (self.start or time.perf_counter())

    return EpochRecorder()


def _column(history: dict, key: str) -> np.ndarray:
    frame = history.get(key)
    return np.asarray(frame.iloc[:, 0], dtype=np.float64) if frame is not None else np.zeros(0)


def _history(scvi_history: dict, recorder, max_epochs: int, train_key: str, validation_key: str) -> dict:
    """scvi-tools' logged history as a :class:`scgen_ae.train.History` record (its ``as_dict()``)."""
    train = _column(scvi_history, train_key)
    validation = _column(scvi_history, validation_key)
    # the loss terms scvi-tools logs, under History's term keys (it runs no penalties)
    terms = {f"{ours}_{term}": _column(scvi_history, f"{theirs}_{mode}")
             for ours, mode in (("train", "train"), ("validation", "validation"))
             for term, theirs in (("reconstruction", "reconstruction_loss"), ("kl", "kl_local"))}
    return History(
        train_loss=list(train), validation_loss=list(validation), kl_weight=list(recorder.kl_weight[: len(train)]),
        # scvi-tools keeps the last epoch's weights; best_epoch only says where validation was lowest
        best_epoch=int(np.argmin(validation)) if len(validation) else -1,
        stopped_early=bool(len(train) < max_epochs), seconds=float(recorder.seconds),
        terms={key: list(values) for key, values in terms.items() if len(values)},
    ).as_dict()


# ---------------------------------------------------------------- the adapters

def fit_scvi(adata: AnnData, *, batch_key: str | None, layer: str | None, model_kwargs: dict,
             train_kwargs: dict, linear_decoder: bool = False, seed: int = 0,
             n_threads: int | None = None, covariates=None) -> ScviFit:
    """Train scvi-tools' SCVI (or LinearSCVI) on ``adata``'s counts; ``covariates`` (a
    :class:`~scgen_ae.covariates.CovariateSpec`) become its ``categorical_covariate_keys`` /
    ``continuous_covariate_keys``.

    Returns ``latent`` (n_cells, n_latent) posterior means, ``loadings`` (n_genes,
    n_latent) for LinearSCVI (None for SCVI), the history (``train_loss``: per-cell
    reconstruction + kl_weight x KL; ``validation_loss``: scvi-tools' ``elbo_validation``,
    reconstruction + KL at weight 1; ``kl_weight``; ``best_epoch``; ``seconds``) and the model.
    """
    scvi = import_scvi()
    cls = scvi.model.LinearSCVI if linear_decoder else scvi.model.SCVI
    private = _private_counts(adata, layer, batch_key, covariates)
    recorder = _epoch_recorder()
    progress = bool(train_kwargs.get("enable_progress_bar", False))
    covariate_keys = {}
    if covariates:
        covariate_keys = {"categorical_covariate_keys": list(covariates.categorical_keys) or None,
                          "continuous_covariate_keys": list(covariates.continuous_keys) or None}
    with _quiet(progress), _seeded(scvi, seed, n_threads):
        cls.setup_anndata(private, batch_key=_BATCH if batch_key is not None else None, **covariate_keys)
        model = cls(private, **model_kwargs)
        model.train(callbacks=[recorder], enable_model_summary=False, **train_kwargs)
        latent = np.asarray(model.get_latent_representation(), dtype=np.float32)
        loadings = np.asarray(model.get_loadings(), dtype=np.float32) if linear_decoder else None
    history = _history(model.history, recorder, int(train_kwargs["max_epochs"]), "train_loss", "elbo_validation")
    return ScviFit(latent=latent, history=history, model=model, loadings=loadings)


def fit_amortized_lda(adata: AnnData, *, n_topics: int = 20, layer: str | None = None, n_hidden: int = 128,
                      cell_topic_prior: float | None = None, topic_feature_prior: float | None = None,
                      max_epochs: int | None = None, batch_size: int = 128, lr: float | None = None,
                      seed: int = 0, n_threads: int | None = None, device: str = "auto",
                      progress: bool = False, n_samples: int = 5000) -> ScviFit:
    """Train scvi-tools' AmortizedLDA (Pyro) on ``adata``'s counts, for ``tl.lda(backend="scvi-tools")``.

    Trains on all cells (scvi-tools' Pyro training plan logs no validation loss).

    Returns ``latent``: (n_cells, n_topics) topic proportions (rows sum to 1);
    ``loadings``: (n_topics, n_genes) topic-gene distributions (rows sum to 1; the
    posterior mean from ``n_samples`` draws); the history (``train_loss``: scvi-tools'
    ``elbo_train`` per epoch, the Pyro loss i.e. negative ELBO; ``validation_loss`` and
    ``kl_weight`` empty; ``seconds``) and the model. ``max_epochs=None`` uses scvi-tools'
    heuristic (400 epochs up to 20k cells, fewer beyond).
    """
    if int(n_topics) < 1:
        raise ValueError(f"n_topics={n_topics}; it must be at least 1.")
    scvi = import_scvi()
    X = v.get_matrix(adata, layer)
    v.check_counts(X, layer, "poisson", needs="AmortizedLDA (a topic model of counts)", otherwise=None)
    v.check_not_empty(X, layer)
    private = _private_counts(adata, layer, None)
    epochs = TrainConfig(max_epochs=max_epochs).epochs_for(adata.n_obs)
    dev = resolve_device(device)
    recorder = _epoch_recorder()
    with _quiet(progress), _seeded(scvi, seed, n_threads):
        scvi.model.AmortizedLDA.setup_anndata(private)
        model = scvi.model.AmortizedLDA(private, n_topics=int(n_topics), n_hidden=n_hidden,
                                        cell_topic_prior=cell_topic_prior, topic_feature_prior=topic_feature_prior)
        model.train(max_epochs=epochs, batch_size=batch_size, lr=lr, train_size=1.0, callbacks=[recorder],
                    accelerator="gpu" if dev.type == "cuda" else dev.type, device=1,  # Pyro: device, not devices
                    enable_progress_bar=bool(progress), enable_model_summary=False)
        proportions = np.asarray(model.get_latent_representation(), dtype=np.float32)
        topic_gene = np.asarray(model.get_feature_by_topic(n_samples=n_samples), dtype=np.float32).T
    history = _history(model.history, recorder, epochs, "elbo_train", "elbo_validation")
    history["kl_weight"] = np.zeros(0)
    return ScviFit(latent=proportions, history=history, model=model, loadings=topic_gene)
