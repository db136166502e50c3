"""Trained-model objects: each pairs a torch module with the AnnData bookkeeping."""
from ._base import BaseModel
from .vae import VAE, VAEConfig, VAEModule

__all__ = ["BaseModel", "VAE", "VAEConfig", "VAEModule"]

# issue 5: denoising
from .dae import DAE, DAEConfig, DAEModule  # noqa: E402

__all__ += ["DAE", "DAEConfig", "DAEModule"]
# --- topic models (issue 6, LDA half)
from .lda_vb import ClassicLDA, VBLDAConfig  # noqa: E402
from .topic import LDA, TopicConfig, TopicModule  # noqa: E402

__all__ += ["LDA", "ClassicLDA", "TopicConfig", "TopicModule", "VBLDAConfig"]
