"""What a module's ``loss`` returns: the objective and the terms it is made of."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

#: term names the history keys already use: a penalty may not take one
RESERVED = ("loss", "total", "monitor", "reconstruction", "kl", "kl_weight")


@dataclass(frozen=True)
class LossRecord:
    """The loss of one minibatch, and its terms, each a scalar tensor (a mean over its cells).

    :func:`scgen_ae.train.fit` backpropagates ``total``, validates and stops early on
    ``monitor``, and keeps the per-epoch mean of every term in the history
    (``train_reconstruction``, ``train_kl``, ``train_<penalty>``; ``validation_...``).

    Attributes
    ----------
    total
        What training minimises.
    reconstruction
        The mean negative log-likelihood of the data (for a denoising model, of the data
        it was asked to predict).
    kl
        The mean KL divergence of the posterior from the prior, before ``beta`` and the
        warm-up weight; None for models without a KL term.
    penalties
        Further terms by name (e.g. ``"alignment"``, ``"classification"``), each as it is
        added to ``total``, weights applied: for the VAE ``total = reconstruction +
        beta x kl_weight x kl + sum(penalties)``.
    monitor
        What validation and early stopping watch; None (default): ``total``.
    """

    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor | None = None
    penalties: Mapping[str, torch.Tensor] = field(default_factory=dict)
    monitor: torch.Tensor | None = None

    def __post_init__(self):
        clash = [name for name in self.penalties if name in RESERVED]
        if clash:
            raise ValueError(f"penalty names {clash} are reserved for the loss's own terms; rename them.")
        if self.monitor is None:
            object.__setattr__(self, "monitor", self.total)

    def terms(self) -> dict[str, torch.Tensor]:
        """Every term by the name the history gives it: ``reconstruction``, ``kl`` (when
        there is one) and the penalties."""
        out = {"reconstruction": self.reconstruction}
        if self.kl is not None:
            out["kl"] = self.kl
        out.update(self.penalties)
        return out
