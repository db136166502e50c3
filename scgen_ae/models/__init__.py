"""Trained-model objects: each pairs a torch module with the AnnData bookkeeping."""
from ._base import BaseModel
from .vae import VAE, VAEConfig, VAEModule

__all__ = ["BaseModel", "VAE", "VAEConfig", "VAEModule"]
