"""scgen_ae: deep generative and factor models for single-cell counts, on AnnData.

``import scgen_ae as sa``; then ``sa.pp``, ``sa.tl``, ``sa.pl``, ``sa.datasets``,
``sa.metrics``, and the trained-model classes in ``sa.models``.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("scgen-ae")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.1.0.dev0"

from . import datasets, metrics, models, pl, pp, tl  # noqa: E402
from ._validate import InputError  # noqa: E402
from .io import ModelFileError  # noqa: E402
from .models import VAE  # noqa: E402
from .models import NMF  # noqa: E402  (nmf, issue 6)
from .train import TrainConfig, TrainingDivergedError  # noqa: E402

__all__ = ["pp", "tl", "pl", "datasets", "metrics", "models", "VAE", "TrainConfig",
           "InputError", "ModelFileError", "TrainingDivergedError", "__version__"]
__all__ += ["NMF"]  # nmf (issue 6)
