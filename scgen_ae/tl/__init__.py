"""Tools: train models on AnnData and store their outputs (scanpy's ``tl``)."""
from ._score import score_integration
from ._vae import vae

__all__ = ["vae", "score_integration"]
