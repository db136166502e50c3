"""Arrays -> AnnData: every front's results written in one step, after everything that can
fail has run, and the models trained into an AnnData kept for :func:`get_model`. Used by the
``tl`` fronts and by model methods that annotate an AnnData (``VAE.map_query``), so models
never import fronts."""
from __future__ import annotations

import warnings
import weakref

import numpy as np
from anndata import AnnData

from . import _validate as v


def _uns_safe(value):
    """Make a parameter value storable in ``.uns`` / ``.h5ad``."""
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return [str(x) for x in value]
    return value


_NOTHING = object()


def write_results(adata: AnnData, *, X=_NOTHING, obs=None, obsm=None, layers=None, varm=None, uns=None,
                  stacklevel: int = 3) -> None:
    """Assign all outputs at once, after everything that can fail has run.

    The shapes are checked before the first assignment, so a result that does not fit
    ``adata`` raises :class:`~scgen_ae.InputError` with ``adata`` untouched. Replacing a
    key that is already there is announced with a ``UserWarning`` naming it, ``stacklevel``
    as :func:`warnings.warn`'s (the default: the caller of the function that calls this).
    ``X`` replaces ``adata.X`` when given.
    """
    n_obs, n_vars = adata.shape
    stores = (("obs", adata.obs, obs, (n_obs,)), ("obsm", adata.obsm, obsm, (n_obs,)),
              ("layers", adata.layers, layers, (n_obs, n_vars)), ("varm", adata.varm, varm, (n_vars,)),
              ("uns", adata.uns, uns, None))
    for name, _, items, shape in stores:
        for key, value in (items or {}).items():
            got = tuple(np.shape(value))[: len(shape)] if shape is not None else None
            if shape is not None and got != shape:
                raise v.InputError(
                    f"The result for adata.{name}[{key!r}] has shape {np.shape(value)}, but adata has "
                    f"{n_obs} cells x {n_vars} genes (expected {shape} first): nothing was written."
                )
    if X is not _NOTHING and tuple(np.shape(X)) != (n_obs, n_vars):
        raise v.InputError(f"The result for adata.X has shape {np.shape(X)}, but adata is {n_obs} x {n_vars}: "
                           "nothing was written.")
    replaced = [f"adata.{name}[{key!r}]" for name, store, items, _ in stores for key in items or {} if key in store]
    if replaced:
        warnings.warn(f"Replacing {', '.join(replaced)}, which already existed, with this result; pass other keys "
                      "(key_added= / uns_key= / layer_added=) to keep both.", UserWarning, stacklevel=stacklevel)
    if X is not _NOTHING:
        adata.X = X
    for _, store, items, _ in stores:
        for key, value in (items or {}).items():
            store[key] = value


def params_record(**params) -> dict:
    return {k: _uns_safe(val) for k, val in params.items()}


# trained models by the AnnData they annotated: id(adata) -> {uns_key: model}. Entries go
# with their AnnData (weakref.finalize), so nothing is kept alive and ids are not reused stale.
_MODELS: dict[int, dict[str, object]] = {}


def keep_model(adata: AnnData, uns_key: str, model) -> None:
    """Remember ``model`` as the one that wrote ``adata.uns[uns_key]`` (see :func:`get_model`)."""
    key = id(adata)
    if key not in _MODELS:
        weakref.finalize(adata, _MODELS.pop, key, None)
    _MODELS.setdefault(key, {})[uns_key] = model


def returned(target: AnnData, model, *, copy: bool, uns_key: str):
    """The one return rule of the training fronts: the annotated copy with ``copy=True`` (as
    scanpy), else the model; either way the model is kept for :func:`get_model`."""
    keep_model(target, uns_key, model)
    return target if copy else model


def write_and_return(adata: AnnData, model, *, copy: bool, uns_key: str, stacklevel: int = 3, **results):
    """The last step of every training front, once the model is fitted and applied.

    Parameters
    ----------
    adata
        The caller's AnnData; with ``copy=True`` it is left untouched and a copy is annotated.
    model
        The fitted model, returned (or kept for :func:`get_model` with ``copy=True``).
    copy, uns_key
        The front's arguments (see :func:`returned`).
    stacklevel
        Where a warning about replaced keys points, as :func:`warnings.warn`'s counted from
        here: the default 3 is the caller of the front that calls this.
    **results
        What to write: ``X``, ``obs``, ``obsm``, ``layers``, ``varm``, ``uns`` of
        :func:`write_results`, all in one step.

    Returns
    -------
    The annotated copy with ``copy=True``, else ``model``.
    """
    # the copy is made only now: nothing before it may have written into adata
    target = adata.copy() if copy else adata
    write_results(target, stacklevel=stacklevel + 1, **results)
    return returned(target, model, copy=copy, uns_key=uns_key)


def get_model(adata: AnnData, uns_key: str = "vae"):
    """The model a training front fitted into ``adata`` in this session.

    For ``copy=True``, which returns the annotated AnnData as scanpy does::

        adata2 = sa.tl.vae(adata, copy=True)
        model = sa.tl.get_model(adata2)               # uns_key="vae" (tl.vae's default)
        topics = sa.tl.get_model(adata2, "lda")      # tl.lda's default uns_key

    ``uns_key`` is the front's ``uns_key`` (``"vae"``, ``"denoise"``, ``"nmf"``, ``"lda"``,
    ``"map_query"``). Models live in memory only: after reading an ``.h5ad`` file, load the
    model saved with ``model.save(path)`` (``sa.VAE.load(path)``).
    """
    models = _MODELS.get(id(adata), {})
    if uns_key not in models:
        known = sorted(models) or "none"
        raise v.MissingKeyError(
            f"No model was trained into this AnnData under uns_key={uns_key!r} in this session (models here: "
            f"{known}). Models are kept in memory only: train one (e.g. sa.tl.vae(adata)), or load a saved one "
            "with sa.VAE.load(path)."
        )
    return models[uns_key]
