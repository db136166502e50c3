"""Plotting (scanpy's ``pl``): every function returns a matplotlib figure and takes ``save=``."""
from ._embedding import cached_embedding, embed_2d
from ._plots import history, latent

__all__ = ["latent", "history", "embed_2d", "cached_embedding"]

# --- topic models (issue 6, LDA half)
from ._topics import top_genes, topics  # noqa: E402

__all__ += ["topics", "top_genes"]
