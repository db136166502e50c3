"""Tools: train models on AnnData and store their outputs (scanpy's ``tl``)."""
from ._score import score_integration
from ._vae import vae

# latent arithmetic, label transfer (issue 7)
from ._predict import mean_expression, predict, r_squared, response_means  # noqa: E402
from ._remove_batch import remove_batch  # noqa: E402
from ._transfer import transfer_labels  # noqa: E402

__all__ = ["vae", "score_integration"]

# issue 5: denoising
from ._denoise import denoise  # noqa: E402
from ._denoise_benchmark import denoise_benchmark, gene_share_baseline, heldout_errors, holdout_nonzeros  # noqa: E402

__all__ += ["denoise", "denoise_benchmark", "holdout_nonzeros", "gene_share_baseline", "heldout_errors"]
__all__ += ["predict", "remove_batch", "transfer_labels", "mean_expression", "r_squared", "response_means"]  # issue 7
# --- topic models (issue 6, LDA half)
from ._lda import lda  # noqa: E402

__all__ = ["vae", "score_integration"]
__all__ += ["lda"]  # issue 6, LDA half
