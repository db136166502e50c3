"""``tl.predict_labels``: labels from a VAE's classifier (trained semi-supervised), into AnnData."""
from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _validate as v
from ..models.vae import VAE
from ._common import params_record, write_results


def predict_labels(
    adata: AnnData,
    model: VAE,
    *,
    key_added: str = "predicted_labels",
    layer="model",
    batch_key="model",
    batch_size: int = 1024,
    pad_missing: bool = False,
    copy: bool = False,
) -> AnnData | None:
    """Predict cell labels with the classifier of a semi-supervised VAE.

    The model must have been trained with ``sa.tl.vae(..., label_key=...,
    unlabeled_category=...)``, or mapped from such a model with
    :meth:`~scgen_ae.models.VAE.map_query` (the classifier is kept, so query cells that had
    no label get one). See :meth:`~scgen_ae.models.VAE.predict`.

    Parameters
    ----------
    adata
        Cells x genes with the counts the model reads (in memory or backed).
    model
        A :class:`~scgen_ae.models.VAE` with a label classifier.
    key_added
        Where the predictions go (see Sets).
    layer, batch_key
        Where the counts and the batches are; "model" (default): as in training.
    batch_size
        Cells per forward pass.
    pad_missing
        Fill genes of the model that ``adata`` lacks with zeros (with a warning) instead of
        refusing.
    copy
        Return an annotated copy instead of writing into ``adata``.

    Sets
    ----
    - ``adata.obs[key_added]``: the most probable label (categorical, the model's classes).
    - ``adata.obsm[key_added + "_proba"]``: (n_cells, n_classes) float32 class probabilities,
      columns in the order of ``adata.uns[key_added]["labels"]``.
    - ``adata.uns[key_added]``: ``params`` (the arguments used and the model's ``label_key``)
      and ``labels`` (the classes).
    """
    if not isinstance(model, VAE):
        raise v.InputError(f"model must be a trained scgen_ae VAE (sa.tl.vae), got {type(model).__name__}.")
    if not isinstance(key_added, str) or not key_added:
        raise v.InputError(f"key_added must be a non-empty string, got {key_added!r}.")
    v.check_copy(adata, copy)
    proba = model.predict(adata, soft=True, layer=layer, batch_key=batch_key, batch_size=batch_size,
                          pad_missing=pad_missing)
    classes = list(proba.columns)
    best = pd.Categorical.from_codes(proba.to_numpy().argmax(1), categories=classes)
    target = adata.copy() if copy else adata
    params = params_record(label_key=model.label_key, layer=model.layer if layer == "model" else layer,
                           batch_key=model.batch_key if batch_key == "model" else batch_key, pad_missing=pad_missing)
    write_results(target, obs={key_added: best},
                  obsm={f"{key_added}_proba": proba.to_numpy().astype(np.float32)},
                  uns={key_added: {"params": params, "labels": np.asarray(classes, dtype=str)}})
    return target if copy else None
