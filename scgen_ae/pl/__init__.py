"""Plotting (scanpy's ``pl``): every function returns a matplotlib figure and takes ``save=``."""
from ._denoising import denoising
from ._embedding import cached_embedding, embed_2d
from ._loadings import loadings
from ._plots import history, latent
from ._response import response
from ._scores import report, scores, scores_table
from ._topics import top_genes, topics

__all__ = ["latent", "history", "embed_2d", "cached_embedding", "denoising", "response", "topics", "top_genes",
           "loadings", "scores", "report", "scores_table"]
