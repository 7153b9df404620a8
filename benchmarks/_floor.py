"""The bare floor every benchmark compares against: a non-private SGD step of a dense ReLU stack in
plain NumPy (no project code, no per-call overhead), with the same shapes and matmuls as the model.

Forward ``z_l = a_{l-1} W_l^T + b_l`` (ReLU between layers), the mean loss's output delta (sigmoid
minus target for the logistic head, softmax minus one-hot otherwise), backward
``dW_l = delta_l^T a_{l-1}``, ``delta_{l-1} = (delta_l W_l) * [a_{l-1} > 0]``, and an in-place step
``W_l -= lr dW_l``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["NpFloor"]


class NpFloor:
    """One call = one non-private SGD step on the fixed batch ``(X, y)`` (module docstring)."""

    def __init__(self, sizes, head, X, y, seed, *, dtype, lr):
        rng = np.random.default_rng(seed)
        self.W = [(rng.standard_normal((o, i)) * np.sqrt(2.0 / i)).astype(dtype) for i, o in zip(sizes[:-1], sizes[1:])]
        self.b = [np.zeros(o, dtype) for o in sizes[1:]]
        self.X, self.y, self.head, self.dt = X, y, head, dtype
        self.yf = y.astype(dtype)[:, None]
        self.rows = np.arange(X.shape[0])
        self.lr = dtype(lr)

    def _output_delta(self, z):
        if self.head == "logistic":
            np.negative(z, out=z)
            np.exp(z, out=z)
            z += 1
            np.reciprocal(z, out=z)
            z -= self.yf
        else:
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
            z[self.rows, self.y] -= 1
        z *= self.dt(1.0 / self.X.shape[0])
        return z

    def __call__(self):
        acts, a, L = [self.X], self.X, len(self.W)
        for l in range(L):
            z = a @ self.W[l].T
            z += self.b[l]
            if l < L - 1:
                np.maximum(z, 0, out=z)
                acts.append(z)
                a = z
        delta = self._output_delta(z)
        for l in range(L - 1, -1, -1):
            gW = delta.T @ acts[l]
            gb = delta.sum(axis=0)
            if l > 0:
                delta = delta @ self.W[l]
                delta *= acts[l] > 0
            self.W[l] -= self.lr * gW
            self.b[l] -= self.lr * gb
