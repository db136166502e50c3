from __future__ import annotations

import dataclasses
import warnings

from anndata import AnnData

from ..models.vae import VAE, VAEConfig, VAEModule
from ..train import fit, seeded_threads
from ._common import params_record, split_kwargs, training_data, write_results


def vae(
    adata: AnnData,
    *,
    batch_key: str | None = None,
    layer: str | None = None,
    likelihood: str = "zinb",
    n_latent: int = 10,
    n_hidden: int = 128,
    n_layers: int = 1,
    dropout_rate: float = 0.1,
    dispersion: str = "gene",
    beta: float = 1.0,
    encode_batch: bool = True,
    batch_gene_offsets: bool = True,
    mmd_weight: float = 1.0,
    key_added: str = "X_vae",
    uns_key: str = "vae",
    copy: bool = False,
    **train_kwargs,
) -> VAE | tuple[AnnData, VAE]:
    """Train a (conditional) VAE on counts and store its latent space.

    Encoder: log1p(counts) (+ batch) -> Gaussian q(z|x). Decoder: z + batch ->
    softmax expression scale x observed library size -> mean of a ZINB / NB /
    Poisson likelihood, or a Gaussian on log-normalised data (scGen-style).

    Parameters
    ----------
    adata
        Cells x genes; raw counts in ``X`` or ``layers[layer]`` (sparse or dense).
    batch_key
        ``obs`` column with the batch of each cell; None trains an unconditional VAE.
    layer
        Layer with the counts; None uses ``X``.
    likelihood
        "zinb" (default), "nb", "poisson" or "gaussian".
    n_latent, n_hidden, n_layers, dropout_rate
        Architecture (dropout applies to the encoder).
    dispersion
        "gene" or "gene-batch".
    beta
        Weight of the KL term (beta-VAE); the KL is warmed up linearly from 0.
    encode_batch, batch_gene_offsets
        Where batch enters the network: the encoder, and a per-batch, per-gene shift
        of the decoder output (both on by default; see BENCHMARKS.md for why).
    mmd_weight
        Weight of an MMD penalty between the batches' latent distributions (default 1;
        0 turns it off). It assumes the batches share cell types: lower it when their
        compositions differ strongly. Without ``batch_key`` it has no effect.
    key_added
        ``obsm`` key of the latent space.
    uns_key
        ``uns`` key of the parameters and history.
    copy
        Work on a copy and return ``(adata_copy, model)``.
    **train_kwargs
        Options of :class:`scgen_ae.train.TrainConfig`: ``max_epochs`` (default: scvi-tools'
        heuristic, 400 epochs up to 20k cells, fewer beyond), ``batch_size`` (128), ``lr``
        (1e-3), ``validation_fraction`` (0.1), ``early_stopping`` (True), ``patience`` (30),
        ``kl_warmup_epochs``, ``seed`` (0), ``device`` ("auto"), ``precision`` ("auto": bf16 matmuls
        where the hardware has them, else fp32), ``n_threads``, ``progress``.

    Returns
    -------
    VAE
        The trained :class:`~scgen_ae.models.VAE` (or ``(adata, model)`` with ``copy=True``).
        On Ctrl-C the model with the best weights so far is returned and ``adata`` is not
        modified. Errors (bad input, diverging loss) leave ``adata`` unchanged too.

    Sets
    ----

    - ``adata.obsm[key_added]``: (n_cells, n_latent) posterior means.
    - ``adata.uns[uns_key]["params"]``: the arguments used.
    - ``adata.uns[uns_key]["history"]``: per-epoch ``train_loss``, ``validation_loss``
      (mean negative ELBO per cell), ``kl_weight``, ``best_epoch``, ``seconds``.
    """
    train_cfg, rest = split_kwargs(dict(train_kwargs))
    if rest:
        raise TypeError(f"vae() got unexpected keyword arguments {sorted(rest)}.")
    data, cats = training_data(adata, layer, batch_key, likelihood)
    config = VAEConfig(
        n_genes=adata.n_vars, n_batches=len(cats), likelihood=likelihood, n_latent=n_latent,
        n_hidden=n_hidden, n_layers=n_layers, dropout_rate=dropout_rate, dispersion=dispersion,
        beta=beta, encode_batch=encode_batch, batch_gene_offsets=batch_gene_offsets,
        mmd_weight=mmd_weight,
    )
    with seeded_threads(train_cfg.seed, train_cfg.n_threads):
        module = VAEModule(config)
        history = fit(module, data, train_cfg, likelihood)
        model = VAE(config, adata.var_names, batch_key, cats, layer, history.as_dict(), module)
        if history.interrupted:
            warnings.warn(
                "Training was interrupted (Ctrl-C): adata was left unchanged. The returned model holds the "
                "best weights so far; use model.get_latent(adata) or model.save(path), or train again.",
                stacklevel=2,
            )
            return model
        latent = model.get_latent(adata)
    target = adata.copy() if copy else adata
    params = params_record(batch_key=batch_key, layer=layer, **dataclasses.asdict(config),
                           **dataclasses.asdict(train_cfg))
    write_results(target, obsm={key_added: latent},
                  uns={uns_key: {"params": params, "history": model.history, "key_added": key_added}})
    return (target, model) if copy else model
