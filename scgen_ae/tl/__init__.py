"""Tools: train models on AnnData and store their outputs (scanpy's ``tl``)."""
from ._score import score_integration
from ._vae import vae

# --- topic models (issue 6, LDA half)
from ._lda import lda  # noqa: E402

__all__ = ["vae", "score_integration"]
__all__ += ["lda"]  # issue 6, LDA half
