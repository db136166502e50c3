"""Trained-model objects: each pairs a torch module with the AnnData bookkeeping."""
from ._base import BaseModel
from .dae import DAE, DAEConfig, DAEModule
from .lda_vb import ClassicLDA, VBLDAConfig
from .nmf import NMF, NMFConfig, NMFModule
from .topic import LDA, TopicConfig, TopicModule
from .vae import VAE, VAEConfig, VAEModule

__all__ = ["BaseModel", "VAE", "VAEConfig", "VAEModule", "DAE", "DAEConfig", "DAEModule",
           "LDA", "ClassicLDA", "TopicConfig", "TopicModule", "VBLDAConfig", "NMF", "NMFConfig", "NMFModule"]
