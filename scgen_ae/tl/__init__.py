"""Tools: train models on AnnData and store their outputs (scanpy's ``tl``)."""
from ._score import score_integration
from ._vae import vae

__all__ = ["vae", "score_integration"]

# issue 5: denoising
from ._denoise import denoise  # noqa: E402
from ._denoise_benchmark import denoise_benchmark, gene_share_baseline, heldout_errors, holdout_nonzeros  # noqa: E402

__all__ += ["denoise", "denoise_benchmark", "holdout_nonzeros", "gene_share_baseline", "heldout_errors"]
