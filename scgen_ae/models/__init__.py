"""Trained-model objects: each pairs a torch module with the AnnData bookkeeping."""
from ._base import BaseModel
from .vae import VAE, VAEConfig, VAEModule

# --- nmf (issue 6) ---
from .nmf import NMF, NMFConfig, NMFModule  # noqa: E402

# --- end nmf ---

__all__ = ["BaseModel", "VAE", "VAEConfig", "VAEModule"]
__all__ += ["NMF", "NMFConfig", "NMFModule"]  # nmf (issue 6)
