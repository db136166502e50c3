"""Tools: train models on AnnData and store their outputs (scanpy's ``tl``)."""
from ._score import score_integration
from ._vae import vae

# --- nmf (issue 6) ---
from ._nmf import nmf  # noqa: E402

# --- end nmf ---

__all__ = ["vae", "score_integration"]
__all__ += ["nmf"]  # nmf (issue 6)
