"""dptheory.validation.check_broadcast: the shared broadcast check (issue 14, robustness)."""
import numpy as np
import pytest

from dptheory.validation import check_broadcast


def test_returns_numpy_broadcast_shape():
    assert check_broadcast(k=1, d=10.0) == ()
    assert check_broadcast(k=[1, 2, 3], d=10) == (3,)
    assert check_broadcast(a=np.ones((2, 1)), b=np.ones(4), c=[[1]]) == (2, 4)
    assert check_broadcast() == ()


@pytest.mark.parametrize("kwargs,named,not_named", [
    ({"k": [1, 2, 3], "d": [10, 20]}, ["k", "d"], []),
    ({"k": [1, 2, 3], "sigma": 1.0, "d": [[1], [2]], "clip": [1, 2]}, ["k", "clip"], ["sigma", "d"]),
    ({"a": np.ones((2, 3)), "b": np.ones((4, 3)), "c": np.ones(3)}, ["a", "b"], ["c"]),
    ({"x": np.ones((2, 3)), "y": np.ones((2, 4)), "z": np.ones((5, 1))}, ["x", "y", "z"], []),
])
def test_names_exactly_the_conflicting_parameters(kwargs, named, not_named):
    with pytest.raises(ValueError) as err:
        check_broadcast(**kwargs)
    msg = str(err.value)
    head, _, detail = msg.partition(" do not broadcast together: ")
    listed = head.replace(" and ", ", ").split(", ")
    assert listed == named     # exactly the conflicting ones, in the caller's order
    assert detail == ", ".join(f"{n} has shape {np.shape(kwargs[n])}" for n in named)
    assert not set(listed) & set(not_named)
    # NumPy agrees that these do not broadcast
    with pytest.raises(ValueError):
        np.broadcast_shapes(*(np.shape(v) for v in kwargs.values()))


def test_ragged_input_is_named():
    with pytest.raises(ValueError, match="^x must be a scalar or a regular"):
        check_broadcast(x=[[1, 2], [3]], y=1)
