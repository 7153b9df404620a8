"""Dense models (linear, logistic, softmax regression, MLPs) on one flat parameter vector."""
from .layout import Layout
from .pergrad import Backprop, materialize, sq_norms, weighted_sum
from .dense import (
    ACTIVATIONS, HEADS, Model, accuracy, backprop, check_targets, evaluate, gradient, init_params, linear_regression,
    logistic_regression, loss, mlp, per_example_grad_norms, predict, softmax_regression,
)
from .clip import clip_factors, clipped_grad_sum, layer_clip_norms, total_clip_norm

__all__ = [
    "Layout", "Backprop", "materialize", "sq_norms", "weighted_sum",
    "ACTIVATIONS", "HEADS", "Model", "accuracy", "backprop", "check_targets", "evaluate", "gradient", "init_params",
    "linear_regression", "logistic_regression", "loss", "mlp", "per_example_grad_norms", "predict",
    "softmax_regression", "clip_factors", "clipped_grad_sum", "layer_clip_norms", "total_clip_norm",
]
