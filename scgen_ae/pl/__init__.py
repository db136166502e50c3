"""Plotting (scanpy's ``pl``): every function returns a matplotlib figure and takes ``save=``."""
from ._embedding import cached_embedding, embed_2d
from ._plots import history, latent

# issue 7
from ._response import response  # noqa: E402

__all__ = ["latent", "history", "embed_2d", "cached_embedding"]

# issue 5: denoising
from ._denoising import denoising  # noqa: E402

__all__ += ["denoising"]
__all__ += ["response"]  # issue 7
# --- topic models (issue 6, LDA half)
from ._topics import top_genes, topics  # noqa: E402

__all__ += ["topics", "top_genes"]
