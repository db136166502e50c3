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
from .ondisk import read_backed  # noqa: E402
from .train import TrainConfig, TrainingDivergedError  # noqa: E402

# Every trained-model class sa.models exports is also here (sa.VAE, sa.NMF, ...), taken from its
# __all__ so that a new model family is exported in one place.
_MODEL_CLASSES = {name: obj for name, obj in ((n, getattr(models, n)) for n in models.__all__)
                  if isinstance(obj, type) and issubclass(obj, models.BaseModel) and obj is not models.BaseModel}
globals().update(_MODEL_CLASSES)

__all__ = ["settings", "pp", "tl", "pl", "datasets", "metrics", "models", "ondisk", "covariates", "read_backed",
           *_MODEL_CLASSES, "TrainConfig",
           "InputError", "ModelFileError", "TrainingDivergedError", "__version__"]
