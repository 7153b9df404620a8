"""Dense models on one flat parameter vector: linear, logistic and softmax regression, MLPs.

A :class:`Model` is a :class:`~sims.models.layout.Layout` (a stack of dense layers
``z_l = W_l a_l + b_l``), a hidden activation (``a_{l+1} = act(z_l)``), a loss head on the
last pre-activation ``z = z_{L-1}`` and a dtype. One call to :func:`backprop` runs one forward
and one backward pass with BLAS matmuls in ``model.dtype`` and returns a
:class:`~sims.models.pergrad.Backprop` (per-layer inputs ``a_l`` and per-example output
gradients ``delta_l = d loss_i / d z_l``), from which per-example gradient norms and
clipped sums follow without a batch x parameters tensor (``sims.models.pergrad``).

Per-example losses and output gradients (standard; e.g. Goodfellow, Bengio & Courville,
*Deep Learning*, 2016, sections 6.2.2 and 6.5):

* ``"squared"``: ``l = (y - z)^2 / 2``, ``dl/dz = z - y`` (one output, ``y`` real);
* ``"logistic"``: binary cross-entropy on the logit, ``l = log(1 + e^z) - y z``
  (``np.logaddexp``, stable for any ``z``), ``dl/dz = sigmoid(z) - y`` (one output, ``y`` in {0, 1});
* ``"softmax"``: ``l = logsumexp(z) - z_y`` (max-shifted, stable for any ``z``),
  ``dl/dz = softmax(z) - onehot(y)`` (``K >= 2`` outputs, ``y`` in ``{0..K-1}``).

Backward recursion: ``delta_{l-1} = (delta_l W_l) * act'(z_{l-1})`` with
``relu' = 1[a > 0]`` and ``tanh' = 1 - a^2`` evaluated on the activation output ``a``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from dptheory.validation import check_choice, check_finite_array, check_int

from dptheory.validation import as_generator
from .layout import Layout
from .pergrad import Backprop, sq_norms, weighted_sum

__all__ = [
    "Model", "ACTIVATIONS", "HEADS",
    "linear_regression", "logistic_regression", "softmax_regression", "mlp",
    "init_params", "backprop", "backward_deltas", "check_targets", "loss", "predict", "accuracy", "evaluate", "gradient", "per_example_grad_norms",
]

ACTIVATIONS = ("relu", "tanh")
HEADS = ("squared", "logistic", "softmax")
_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}") from exc
    if dt not in _DTYPES:
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    return dt


@dataclass(frozen=True)
class Model:
    """A dense stack: parameter layout, hidden activation, loss head and floating dtype.

    Attributes
    ----------
    layout : Layout
        Layer sizes ``(d_in, h_1, ..., d_out)`` and bias flag.
    activation : {"relu", "tanh"}
        Hidden-layer activation (unused for a single layer).
    head : {"squared", "logistic", "softmax"}
        Loss head; ``"squared"`` and ``"logistic"`` need ``d_out == 1``, ``"softmax"`` needs ``d_out >= 2``.
    dtype : numpy dtype
        ``float64`` or ``float32``; every array produced by the model functions has this dtype.
    """

    layout: Layout
    activation: str = "relu"
    head: str = "softmax"
    dtype: np.dtype = np.dtype(np.float64)

    def __post_init__(self):
        if not isinstance(self.layout, Layout):
            raise ValueError(f"layout must be a sims.models.Layout, got {type(self.layout).__name__}")
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("head", self.head, HEADS)
        object.__setattr__(self, "dtype", _check_dtype(self.dtype))
        d_out = self.layout.sizes[-1]
        if self.head in ("squared", "logistic") and d_out != 1:
            raise ValueError(f"head={self.head!r} needs exactly 1 output, got layout output size {d_out}")
        if self.head == "softmax" and d_out < 2:
            raise ValueError(f"head='softmax' needs at least 2 outputs (classes), got layout output size {d_out}")

    @property
    def n_params(self) -> int:
        return self.layout.n_params

    @property
    def n_features(self) -> int:
        return self.layout.sizes[0]

    @property
    def n_classes(self) -> int | None:
        """Number of classes (2 for logistic, ``d_out`` for softmax, ``None`` for regression)."""
        return {"squared": None, "logistic": 2}.get(self.head, self.layout.sizes[-1])


# ----------------------------------------------------------------------------- constructors
def linear_regression(n_features, *, bias=True, dtype=np.float64) -> Model:
    """Linear regression ``z = w.x + b`` with squared loss ``(y - z)^2 / 2``."""
    n = check_int("n_features", n_features, low=1)
    return Model(Layout((n, 1), bias=bool(bias)), "relu", "squared", dtype)


def logistic_regression(n_features, *, bias=True, dtype=np.float64) -> Model:
    """Binary logistic regression: one logit ``z = w.x + b``, loss ``log(1 + e^z) - y z``."""
    n = check_int("n_features", n_features, low=1)
    return Model(Layout((n, 1), bias=bool(bias)), "relu", "logistic", dtype)


def softmax_regression(n_features, n_classes, *, bias=True, dtype=np.float64) -> Model:
    """Multinomial logistic regression: ``z = W x + b`` (``n_classes`` logits), cross-entropy loss."""
    n = check_int("n_features", n_features, low=1)
    k = check_int("n_classes", n_classes, low=2)
    return Model(Layout((n, k), bias=bool(bias)), "relu", "softmax", dtype)


def mlp(sizes, *, activation="relu", bias=True, dtype=np.float64) -> Model:
    """Multi-layer perceptron ``sizes = (d_in, h_1, ..., n_classes)`` with a softmax head.

    ``n_classes = sizes[-1]`` must be at least 2; hidden layers use ``activation``.
    """
    try:
        sizes = tuple(sizes)
    except TypeError as exc:
        raise ValueError(f"sizes must be a sequence of positive ints, got {sizes!r}") from exc
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output size, got {sizes!r}")
    check_int("sizes[-1] (n_classes)", sizes[-1], low=2)
    return Model(Layout(sizes, bias=bool(bias)), activation, "softmax", dtype)


def init_params(model: Model, random_state=None) -> np.ndarray:
    """Initial flat parameters ``(d,)`` in ``model.dtype``.

    Single-layer (convex) models start at zero (the loss is convex, so the start only shifts the
    optimisation constant; ``random_state`` is ignored). Multi-layer models draw weights
    ``W_l ~ N(0, s_l^2)`` with He scaling ``s_l^2 = 2 / fan_in`` for ReLU (He et al., ICCV 2015,
    "Delving deep into rectifiers", section 2.2) and Glorot scaling ``s_l^2 = 2 / (fan_in + fan_out)``
    for tanh (Glorot & Bengio, AISTATS 2010, eq. 12 in its normal form); biases start at zero.
    The output layer uses Glorot scaling in both cases.
    """
    if not isinstance(model, Model):
        raise ValueError(f"model must be a sims.models.Model, got {type(model).__name__}")
    layout = model.layout
    params = np.zeros(layout.n_params, dtype=model.dtype)
    if layout.n_layers == 1:
        return params
    rng = as_generator(random_state)
    for l, (W, _) in enumerate(layout.views(params)):
        fan_out, fan_in = W.shape
        hidden = l < layout.n_layers - 1
        var = 2.0 / fan_in if (hidden and model.activation == "relu") else 2.0 / (fan_in + fan_out)
        W[...] = rng.standard_normal(W.shape) * math.sqrt(var)
    return params


# ----------------------------------------------------------------------------- validation
def _finite(name, value, ndim, dtype) -> np.ndarray:
    """Cast to ``dtype`` and check finiteness; a cheap sum test first, the full check only if it fails."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    # a finite sum implies all entries are finite (inf and NaN propagate); overflow falls through
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.add.reduce(arr, axis=None))
    if not math.isfinite(total):
        check_finite_array(name, arr)
    return arr


def _check_batch(model, params, X, y):
    """Validate ``(model, params, X, y)`` together; returns the checked ``(params, X, y)``."""
    _check_model(model)
    p = _check_params(model, params)
    X = _check_X(model, X)
    return p, X, _check_y(model, y, X.shape[0])


def _check_model(model):
    if not isinstance(model, Model):
        raise ValueError(f"model must be a sims.models.Model, got {type(model).__name__}")


def _check_params(model, params) -> np.ndarray:
    p = _finite("params", params, 1, model.dtype)
    if p.shape != (model.n_params,):
        raise ValueError(f"params must have shape ({model.n_params},), got {p.shape}")
    return p


def _check_X(model, X) -> np.ndarray:
    X = _finite("X", X, 2, model.dtype)
    if X.shape[1] != model.n_features:
        raise ValueError(f"X must have {model.n_features} columns (layout input size), got shape {X.shape}")
    return X


def _check_y(model, y, n_rows) -> np.ndarray:
    """Targets: real ``(B,)`` for squared; 0/1 (as ``model.dtype``) for logistic; int64 labels for softmax."""
    arr = np.asarray(y)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"y must be a numeric array, got dtype {arr.dtype}")
    if arr.shape != (n_rows,):
        raise ValueError(f"y must have shape ({n_rows},) to match X, got {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError("y must contain only finite values (found NaN or inf)")
    if model.head == "squared":
        return np.ascontiguousarray(arr, dtype=model.dtype)
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise ValueError("y must hold integer class labels, got non-integral values")
    k = model.n_classes
    if arr.size and (arr.min() < 0 or arr.max() > k - 1):
        raise ValueError(f"y labels must lie in [0, {k - 1}] for head={model.head!r}, "
                         f"got range [{arr.min()}, {arr.max()}]")
    if model.head == "logistic":
        return np.ascontiguousarray(arr, dtype=model.dtype)
    return arr.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------- forward / backward
def _forward(model, params, X):
    """Return the layer inputs ``acts`` (``acts[0] = X``) and the output pre-activation ``z``."""
    acts = [X]
    views = model.layout.views(params)
    a = X
    for l, (W, b) in enumerate(views):
        z = a @ W.T
        if b is not None:
            z += b
        if l == len(views) - 1:
            return acts, z
        if model.activation == "relu":
            np.maximum(z, 0, out=z)
        else:
            np.tanh(z, out=z)
        acts.append(z)
        a = z


def _evaluated(model, params, X):
    """The output ``z`` of :func:`_forward` for the evaluation functions, refused when not finite.

    The inputs are finite (checked), but products of large ones overflow: a ``ValueError`` that says
    so, instead of NaN and NumPy's overflow warnings."""
    with np.errstate(over="ignore", invalid="ignore"):
        _, z = _forward(model, params, X)
    if not np.all(np.isfinite(z)):
        raise ValueError(f"the model output overflows {np.dtype(model.dtype).name} at these params and X "
                         f"(max |params| = {float(np.max(np.abs(params))):.3g}, max |X| = "
                         f"{float(np.max(np.abs(X))):.3g}): the loss is not defined; rescale the inputs or "
                         f"reduce the learning rate")
    return z


def _finite_loss(losses) -> float:
    with np.errstate(over="ignore", invalid="ignore"):
        v = float(losses.mean())
    if not math.isfinite(v):
        raise ValueError(f"the mean loss overflows float64 (largest per-example loss {float(np.max(losses)):.3g}): "
                         f"rescale the inputs or reduce the learning rate")
    return v


def _head(model, z, y):
    """Per-example losses ``(B,)`` and output gradients ``dl/dz`` ``(B, d_out)`` (overwrites ``z``)."""
    if model.head == "squared":
        z1 = z[:, 0]
        np.subtract(z1, y, out=z1)
        losses = 0.5 * z1 * z1
        return losses, z
    if model.head == "logistic":
        z1 = z[:, 0]
        losses = np.logaddexp(0, z1)
        losses -= y * z1
        expit(z1, out=z1)
        z1 -= y
        return losses, z
    # softmax
    rows = np.arange(z.shape[0])
    zy = z[rows, y]
    m = z.max(axis=1, keepdims=True) if z.shape[0] else np.zeros((0, 1), z.dtype)
    z -= m
    np.exp(z, out=z)
    s = z.sum(axis=1)
    losses = m[:, 0] - zy  # >= 0 and exact-ish even for logits of 1e4; then + log(sum exp(z - m))
    losses += np.log(s)
    z /= s[:, None]
    z[rows, y] -= 1
    return losses, z


def backward_deltas(model, views, acts, delta) -> list:
    """Per-layer output gradients ``[d loss_i / d z_l for l = 0 .. L-1]`` from the last one ``delta``:
    the recursion ``delta_{l-1} = (delta_l W_l) * act'(z_{l-1})`` with ``act'`` read off the layer
    inputs ``acts`` (relu: ``a > 0``; tanh: ``1 - a^2``). ``views`` are :meth:`Layout.views` of the
    parameters; arrays may carry leading axes (stacked runs: ``(R, B, .)``, ``W (R, out, in)``)."""
    deltas = [delta]
    for l in range(model.layout.n_layers - 1, 0, -1):
        delta = delta @ views[l][0]
        a = acts[l]
        if model.activation == "relu":
            delta *= a > 0
        else:
            delta *= 1 - a * a
        deltas.append(delta)
    deltas.reverse()
    return deltas


def _backprop(model, params, X, y) -> Backprop:
    acts, z = _forward(model, params, X)
    losses, delta = _head(model, z, y)
    deltas = backward_deltas(model, model.layout.views(params), acts, delta)
    return Backprop(model.layout, tuple(acts), tuple(deltas), losses)


def backprop(model: Model, params, X, y, *, validate: bool = True) -> Backprop:
    """One forward and backward pass over a batch.

    Parameters
    ----------
    model : Model
    params : ndarray (d,)
        Flat parameters (cast to ``model.dtype``; must be finite).
    X : ndarray (B, d_in)
        Inputs; ``B = 0`` is allowed (an empty Poisson batch) and gives empty arrays.
    y : ndarray (B,)
        Targets: real for ``"squared"``, 0/1 for ``"logistic"``, labels ``0..K-1`` for ``"softmax"``.

    validate : bool
        ``False`` skips the checks of ``params``, ``X`` and ``y`` (about 2/3 of the cost of a small
        model's pass): only for a caller that checked them once already, with ``params`` and ``X``
        finite, C-contiguous and of ``model.dtype`` and ``y`` the output of :func:`check_targets`
        (a training loop that slices a validated dataset).

    Returns
    -------
    Backprop
        ``acts[l]`` the input of layer ``l``; ``deltas[l] = d loss_i / d z_l`` of each example's OWN
        loss (not divided by ``B``); ``losses`` the per-example losses. The per-example gradient of
        layer ``l`` is ``outer(deltas[l][i], acts[l][i])`` (and ``deltas[l][i]`` for the bias);
        see ``sims.models.pergrad`` for norms and weighted sums.

    Raises
    ------
    ValueError
        Mismatched shapes, NaN/inf in ``params``, ``X`` or ``y``, labels out of range.
    """
    if validate:
        params, X, y = _check_batch(model, params, X, y)
    return _backprop(model, params, X, y)


def check_targets(model: Model, y, n_rows: int) -> np.ndarray:
    """``y`` checked and cast for ``model``'s head (real for squared, 0/1 for logistic, int64 labels
    ``0..K-1`` for softmax), shape ``(n_rows,)``; what ``backprop(..., validate=False)`` expects."""
    _check_model(model)
    return _check_y(model, y, n_rows)


def _nonempty(X):
    if X.shape[0] == 0:
        raise ValueError("X must have at least 1 row for a mean over the batch, got 0")


def loss(model: Model, params, X, y) -> float:
    """Mean per-example loss ``(1/B) sum_i l(z_i, y_i)`` over ``B >= 1`` examples (see module docstring)."""
    p, X, y = _check_batch(model, params, X, y)
    _nonempty(X)
    z = _evaluated(model, p, X)
    with np.errstate(over="ignore", invalid="ignore"):
        losses, _ = _head(model, z, y)
    return _finite_loss(losses)


def predict(model: Model, params, X) -> np.ndarray:
    """Model output: ``z`` ``(B,)`` for regression, ``P(y=1) = sigmoid(z)`` ``(B,)`` for logistic,
    class probabilities ``softmax(z)`` ``(B, K)`` for softmax (max-shifted, stable)."""
    _check_model(model)
    p = _check_params(model, params)
    X = _check_X(model, X)
    z = _evaluated(model, p, X)
    if model.head == "squared":
        return z[:, 0].copy()
    if model.head == "logistic":
        return expit(z[:, 0])
    if z.shape[0]:
        z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def accuracy(model: Model, params, X, y) -> float:
    """Classification accuracy; for the ``"squared"`` head the coefficient of determination R^2.

    Classification: fraction of examples whose predicted class (``z > 0`` for logistic, ``argmax z``
    for softmax) equals ``y``. Regression: ``R^2 = 1 - sum (y - z)^2 / sum (y - mean y)^2``; when
    ``y`` is constant the ratio is undefined and, following scikit-learn's ``r2_score``
    (``force_finite=True``), 1.0 is returned for a perfect fit and 0.0 otherwise (never NaN).
    """
    p, X, y = _check_batch(model, params, X, y)
    _nonempty(X)
    return _accuracy_of(model, _evaluated(model, p, X), y)


def _accuracy_of(model, z, y) -> float:
    if model.head == "squared":
        res = float(np.sum((y - z[:, 0]) ** 2, dtype=np.float64))
        tot = float(np.sum((y - y.mean(dtype=np.float64)) ** 2, dtype=np.float64))
        if tot == 0.0:
            return 1.0 if res == 0.0 else 0.0
        return 1.0 - res / tot
    if model.head == "logistic":
        pred = z[:, 0] > 0
        return float(np.mean(pred == (y > 0.5)))
    return float(np.mean(np.argmax(z, axis=1) == y))


def evaluate(model: Model, params, X, y) -> dict:
    """``{"loss": mean loss, "accuracy": accuracy}`` from ONE forward pass (as :func:`loss` and
    :func:`accuracy`, which it equals bit for bit), for a training loop's records.

    Unlike those two it does not raise when the output overflows: it returns ``loss = inf`` and
    ``accuracy = nan`` then, so that the loop can report the divergence at its step.
    """
    p, X, y = _check_batch(model, params, X, y)
    _nonempty(X)
    with np.errstate(over="ignore", invalid="ignore"):
        _, z = _forward(model, p, X)
        if not np.all(np.isfinite(z)):
            return {"loss": math.inf, "accuracy": math.nan}
        acc = _accuracy_of(model, z, y)
        losses, _ = _head(model, z, y)
        loss = float(losses.mean())
    return {"loss": loss, "accuracy": acc}


def gradient(model: Model, params, X, y) -> np.ndarray:
    """Mean gradient ``(1/B) sum_i grad l_i`` ``(d,)`` in ``model.dtype`` (``B >= 1``)."""
    bp = backprop(model, params, X, y)
    _nonempty(bp.acts[0])
    return weighted_sum(bp, np.full(bp.batch_size, 1.0 / bp.batch_size, dtype=model.dtype))


def per_example_grad_norms(model: Model, params, X, y, *, per_layer=False) -> np.ndarray:
    """L2 norms of each example's gradient: ``(B,)``, or ``(B, n_layers)`` with ``per_layer=True``.

    Uses ``||outer(delta_i, a_i)||^2 = ||delta_i||^2 ||a_i||^2`` (Goodfellow 2015); no ``(B, d)`` tensor.
    """
    bp = backprop(model, params, X, y)
    sq = sq_norms(bp)
    return np.sqrt(sq if per_layer else sq.sum(axis=1))
