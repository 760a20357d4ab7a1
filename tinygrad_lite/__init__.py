"""tinygrad_lite: a small NumPy reverse-mode autograd engine with PyTorch's names.

    from tinygrad_lite import Tensor, nn, optim, functional as F
"""
from . import functional, nn, optim
from .gradcheck import gradcheck
from .random import manual_seed
from .tensor import Tensor, concatenate, is_grad_enabled, no_grad, stack, where

__all__ = ["Tensor", "no_grad", "is_grad_enabled", "where", "concatenate", "stack", "manual_seed",
           "gradcheck", "functional", "nn", "optim"]
