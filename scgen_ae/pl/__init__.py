"""Plotting (scanpy's ``pl``): every function returns a matplotlib figure and takes ``save=``."""
from ._embedding import cached_embedding, embed_2d
from ._plots import history, latent

__all__ = ["latent", "history", "embed_2d", "cached_embedding"]

# evalbridge: integration scores and the one-figure report
from ._scores import report, scores, scores_table  # noqa: E402

__all__ += ["scores", "report", "scores_table"]
