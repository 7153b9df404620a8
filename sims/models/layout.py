"""Flat parameter layout of a stack of dense layers.

All parameters of a model live in ONE flat vector so that masks, top-k and
noise act on one array. Layer ``l`` maps ``sizes[l]`` inputs to
``sizes[l+1]`` outputs; its block in the flat vector is the weight matrix
``W_l`` (shape ``(out, in)``, row-major) followed by the bias ``b_l``
(shape ``(out,)``) when ``bias`` is true.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from dptheory.validation import check_int

__all__ = ["Layout"]


@dataclass(frozen=True)
class Layout:
    """Sizes ``(d_in, h_1, ..., d_out)`` of a dense stack and whether layers carry a bias."""

    sizes: tuple
    bias: bool = True

    def __post_init__(self):
        sizes = tuple(int(check_int(f"sizes[{i}]", s, low=1)) for i, s in enumerate(self.sizes))
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least an input and an output size, got {self.sizes!r}")
        object.__setattr__(self, "sizes", sizes)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @cached_property
    def offsets(self) -> tuple:
        """``offsets[l]`` is where layer ``l`` starts; ``offsets[-1]`` is the parameter count."""
        out = [0]
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            out.append(out[-1] + fan_out * fan_in + (fan_out if self.bias else 0))
        return tuple(out)

    @property
    def n_params(self) -> int:
        return self.offsets[-1]

    def weight_slice(self, layer: int) -> slice:
        start = self.offsets[layer]
        return slice(start, start + self.sizes[layer + 1] * self.sizes[layer])

    def bias_slice(self, layer: int) -> slice | None:
        if not self.bias:
            return None
        stop = self.offsets[layer + 1]
        return slice(stop - self.sizes[layer + 1], stop)

    def layer_slice(self, layer: int) -> slice:
        return slice(self.offsets[layer], self.offsets[layer + 1])

    @cached_property
    def names(self) -> tuple:
        """Names of the parameter blocks in flat order, e.g. ``("layer0.weight", "layer0.bias", ...)``."""
        out = []
        for l in range(self.n_layers):
            out.append(f"layer{l}.weight")
            if self.bias:
                out.append(f"layer{l}.bias")
        return tuple(out)

    def views(self, params: np.ndarray) -> list:
        """Per layer ``(W, b)`` views into ``params`` (``b`` is ``None`` without bias). Writes go through."""
        if params.shape[-1] != self.n_params:
            raise ValueError(f"params must have {self.n_params} entries, got shape {params.shape}")
        out = []
        for l in range(self.n_layers):
            W = params[..., self.weight_slice(l)].reshape(params.shape[:-1] + (self.sizes[l + 1], self.sizes[l]))
            bs = self.bias_slice(l)
            out.append((W, None if bs is None else params[..., bs]))
        return out

    def named_views(self, params: np.ndarray) -> dict:
        """``{name: view}`` for every parameter block."""
        out = {}
        for l, (W, b) in enumerate(self.views(params)):
            out[f"layer{l}.weight"] = W
            if b is not None:
                out[f"layer{l}.bias"] = b
        return out
