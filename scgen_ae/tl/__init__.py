"""Tools: train models on AnnData and store their outputs (scanpy's ``tl``)."""
from ._composition import CompositionWarning, batch_composition
from ._de import differential_expression
from ._denoise import denoise
from ._denoise_benchmark import denoise_benchmark, gene_share_baseline, heldout_errors, heldout_nll, holdout_nonzeros
from ._lda import lda
from ._nmf import nmf
from ._predict import mean_expression, predict, r_squared, response_means
from ._predict_labels import predict_labels
from ._remove_batch import remove_batch
from ._score import score_integration
from ._transfer import transfer_labels
from ._common import get_model
from ._vae import vae

__all__ = [
    "vae", "denoise", "nmf", "lda", "score_integration", "get_model",            # models and scores
    "batch_composition", "CompositionWarning",                                   # do batches share cell types?
    "differential_expression",                                                   # Bayes-factor DE
    "predict_labels",                                                            # semi-supervised labels
    "denoise_benchmark", "holdout_nonzeros", "gene_share_baseline", "heldout_errors",  # held-out denoising
    "heldout_nll",
    "predict", "remove_batch", "transfer_labels", "mean_expression", "r_squared", "response_means",  # latent
]
