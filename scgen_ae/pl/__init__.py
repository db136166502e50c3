"""Plotting (scanpy's ``pl``): every function returns a matplotlib figure and takes ``save=``."""
from ._embedding import cached_embedding, embed_2d
from ._plots import history, latent

__all__ = ["latent", "history", "embed_2d", "cached_embedding"]

# --- nmf (issue 6) ---
from ._loadings import loadings  # noqa: E402

__all__ += ["loadings"]
# --- end nmf ---
