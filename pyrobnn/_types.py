"""Type aliases used in pyrobnn's annotations."""
from __future__ import annotations

import os
from typing import Any, Callable, Union

import numpy.typing as npt
import torch

#: Anything the input checks turn into a tensor: a tensor, a NumPy array, a pandas object, nested
#: sequences of numbers.
ArrayLike = Union[torch.Tensor, npt.ArrayLike]

#: A filesystem path.
PathLike = Union[str, "os.PathLike[str]"]

#: A Pyro guide: a callable taking the model's arguments that samples every lifted weight site.
Guide = Callable[..., Any]
