"""scgen_ae: deep generative and factor models for single-cell counts, on AnnData.

``import scgen_ae as sa``; then ``sa.pp``, ``sa.tl``, ``sa.pl``, ``sa.datasets``,
``sa.metrics``, and the trained-model classes in ``sa.models``.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("scgen-ae")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.1.0.dev0"

from . import covariates, datasets, metrics, models, ondisk, pl, pp, tl  # noqa: E402
from ._settings import settings  # noqa: E402
from ._validate import InputError  # noqa: E402
from .io import ModelFileError  # noqa: E402
from .models import DAE, LDA, NMF, VAE, ClassicLDA  # noqa: E402
from .ondisk import read_backed  # noqa: E402
from .train import TrainConfig, TrainingDivergedError  # noqa: E402

__all__ = ["settings", "pp", "tl", "pl", "datasets", "metrics", "models", "ondisk", "covariates", "read_backed",
           "VAE", "DAE", "LDA", "ClassicLDA", "NMF", "TrainConfig",
           "InputError", "ModelFileError", "TrainingDivergedError", "__version__"]
