"""Tensor: a NumPy array that remembers the op that made it, and backward() that walks that record in reverse.

Every op below is written the same way (micrograd's pattern, on arrays):

    out_data = <forward in NumPy>
    def backward(g):                 # g = dLoss/dout, same shape as out
        return <dLoss/dinput for each input, in order>
    return Tensor._make(out_data, (inputs...), "name", backward)

An op may return a gradient of the *broadcast* shape; `_unbroadcast` sums it back to the input's shape in one
place, so no op has to think about broadcasting. A small set of ops are primitives (add, mul, pow, matmul,
exp, log, tanh, relu, sum, max, softmax, log_softmax, reshape, permute, getitem, where, concatenate); sub, div,
neg, sqrt, sigmoid, gelu, mean, var, ... are composed from them. Fused versions of composed ops (one node, one
hand-derived backward, fewer passes over memory) live in functional.py, each tested against its composition.
"""
import contextlib
import math
import threading

import numpy as np


class _GradMode(threading.local):
    """Grad mode is per thread, as in PyTorch: a no_grad in one thread leaves the others alone. Each thread
    starts with recording on and its own stack of modes to restore (threading.local runs __init__ per thread)."""
    enabled = True

    def __init__(self):
        self.saved = []


_mode = _GradMode()


class no_grad(contextlib.ContextDecorator):
    """`with no_grad():` or `@no_grad()`: ops inside record no graph (as torch.no_grad; this thread only)."""

    def __enter__(self):
        _mode.saved.append(_mode.enabled)     # a stack, so nesting and recursion restore the right mode
        _mode.enabled = False

    def __exit__(self, *exc):
        _mode.enabled = _mode.saved.pop()
        return False


def is_grad_enabled():
    return _mode.enabled


def _as_array(data, dtype=None):
    """Python scalars and lists become float32; NumPy arrays keep their dtype (so tests can run in float64)."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, (np.ndarray, np.generic)):
        return np.asarray(data, dtype=dtype)
    return np.array(data, dtype=dtype or np.float32)


def _unbroadcast(grad, shape, op):
    """Sum a gradient of a broadcast result back to an input's `shape`: leading axes, then size-1 axes."""
    if grad.shape == shape:
        return grad
    if grad.ndim > len(shape):
        grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    assert grad.shape == shape, f"{op}: gradient of shape {grad.shape} for an input of shape {shape}"
    return grad


def _freed_graph(g):
    raise RuntimeError("backward: this graph was already freed by an earlier backward(); "
                       "call backward(retain_graph=True) the first time to go through it twice")


def _is_basic_index(index):
    """Basic indexing (ints, slices, None, ...) selects each element at most once, so a plain assignment
    scatters its gradient; integer-array indexing may repeat elements and needs np.add.at."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice, type(None), type(Ellipsis))) for i in items)


def _broadcast_shape(op, *shapes):
    if all(shape == shapes[0] for shape in shapes):   # the common case, without NumPy's slower general check
        return shapes[0]
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(f"{op}: shapes {' and '.join(map(str, shapes))} cannot be broadcast together") from None


def _axes(axis, ndim):
    """Normalize axis=None/int/tuple to a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axis = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axis:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(a % max(ndim, 1) for a in axis))


class Tensor:
    # NumPy must not handle `ndarray/np.float64 <op> Tensor` itself (it would build an object array of 0-d
    # Tensors, cut off from the graph): None makes it return NotImplemented, so Python calls our __r*__ op.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtype)
        if requires_grad and not np.issubdtype(self.data.dtype, np.floating):
            raise TypeError(f"Tensor: only floating-point tensors can require gradients, got {self.data.dtype}")
        self.requires_grad = requires_grad
        self.grad = None         # dLoss/dself after backward(), for leaves (and tensors that called retain_grad)
        self._parents = ()       # the tensors this one was computed from, in order
        self._backward = None    # g -> tuple of gradients for _parents; None for a leaf
        self._op = None          # name of the op that made this tensor
        self._retains_grad = False

    @staticmethod
    def _make(data, parents, op, backward):
        """Wrap an op's result; record the graph only if some input needs a gradient and grad mode is on."""
        out = Tensor(data)
        out._op = op
        if _mode.enabled and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = parents
            out._backward = backward
        return out

    def _lift(self, other):
        """Python numbers and arrays used in an op take this tensor's dtype: `0.5 * x` stays float32."""
        if isinstance(other, Tensor):
            return other
        return Tensor(np.asarray(other, dtype=self.data.dtype))

    # ------------------------------------------------------------------ properties
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    is_leaf = property(lambda self: self._backward is None)

    def numpy(self):
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item: only a one-element tensor can be converted to a Python number, "
                             f"got shape {self.shape}")
        return self.data.item()

    def detach(self):
        return Tensor(self.data)

    def retain_grad(self):
        """Keep .grad on this non-leaf tensor after backward (as torch.Tensor.retain_grad)."""
        self._retains_grad = True
        return self

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        body = np.array2string(self.data, precision=4, threshold=8, edgeitems=2, separator=", ")
        extra = f", op={self._op}" if self._op else (", requires_grad=True" if self.requires_grad else "")
        return f"Tensor({body}, dtype={self.dtype}{extra})"

    # ------------------------------------------------------------------ autograd
    def backward(self, grad=None, retain_graph=False):
        """Reverse-mode differentiation: fill .grad of every leaf that requires it with dself/dleaf.

        Gradients accumulate (+=) into .grad, as in PyTorch: call optimizer.zero_grad() between steps.
        The graph is freed afterwards (memory stays flat); pass retain_graph=True to go through it again.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: tensor does not require grad (no input had requires_grad=True, "
                               "or it was computed under no_grad)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: grad can be implied only for a one-element output, got shape "
                                   f"{self.shape}; pass grad= explicitly")
            grad = np.ones_like(self.data)
        grad = _as_array(grad, self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad has shape {grad.shape}, output has shape {self.shape}")

        grads = {id(self): grad}  # gradients flowing into each node, keyed by identity
        for node in reversed(self._topological_order()):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._backward is None or node._retains_grad:
                node._accumulate(g)
            if node._backward is None:
                continue
            for parent, pg in zip(node._parents, node._backward(g)):
                if pg is None or not parent.requires_grad:
                    continue
                pg = _unbroadcast(pg, parent.shape, node._op)
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg  # a tensor used twice gets both
            if not retain_graph:
                node._parents, node._backward = (), _freed_graph

    def _accumulate(self, g):
        if self.grad is None:
            self.grad = np.array(g, dtype=self.dtype)  # a copy we own: never alias an upstream array
        else:
            self.grad += g

    def _topological_order(self):
        """Every node after all of its inputs. Iterative (an explicit stack), so a 10,000-op chain is fine."""
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, inputs_done = stack.pop()
            if inputs_done:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in node._parents if p.requires_grad and id(p) not in visited)
        return order

    # ------------------------------------------------------------------ primitive binary ops
    def __add__(self, other):
        other = self._lift(other)
        _broadcast_shape("add", self.shape, other.shape)
        return Tensor._make(self.data + other.data, (self, other), "add", lambda g: (g, g))

    def __mul__(self, other):
        other = self._lift(other)
        _broadcast_shape("mul", self.shape, other.shape)
        a, b = self.data, other.data
        return Tensor._make(a * b, (self, other), "mul", lambda g: (g * b, g * a))

    def __pow__(self, other):
        other = self._lift(other)
        _broadcast_shape("pow", self.shape, other.shape)
        a, b = self.data, other.data
        out = a ** b

        def backward(g):  # d(a^b)/da = b a^(b-1);  d(a^b)/db = a^b log(a), only when b needs it
            return g * b * a ** (b - 1), (g * out * np.log(a) if other.requires_grad else None)
        return Tensor._make(out, (self, other), "pow", backward)

    def __matmul__(self, other):
        other = self._lift(other)
        if self.ndim == 0 or other.ndim == 0:
            raise ValueError(f"matmul: both operands need at least 1 dimension, got {self.shape} @ {other.shape}")
        inner = other.shape[-2] if other.ndim > 1 else other.shape[0]
        if self.shape[-1] != inner:  # checked before the 1-D reshapes below, so the message shows the caller's shapes
            raise ValueError(f"matmul: {self.shape} @ {other.shape}: inner dimensions {self.shape[-1]} and "
                             f"{inner} differ")
        if self.ndim == 1:   # NumPy's rule: a vector on the left is a (1, n) row, then the row axis is dropped
            out = self.reshape(1, -1) @ other
            # vector @ vector: out is (1,) here (the right vector's column axis is already dropped) -> a scalar
            return out.reshape(*out.shape[:-2], out.shape[-1]) if other.ndim > 1 else out.reshape(())
        if other.ndim == 1:  # ... and on the right a (n, 1) column
            return (self @ other.reshape(-1, 1)).reshape(*self.shape[:-1])
        if self.ndim > 2 and other.ndim == 2:  # (..., n, k) @ (k, m): one big 2-D GEMM beats many small ones
            out = self.reshape(-1, self.shape[-1]) @ other
            return out.reshape(*self.shape[:-1], other.shape[-1])
        _broadcast_shape("matmul (batch dimensions)", self.shape[:-2], other.shape[:-2])
        a, b = self.data, other.data

        def backward(g):  # C = A B  =>  dA = G B^T,  dB = A^T G  (batch axes summed by _unbroadcast)
            return g @ b.swapaxes(-1, -2), a.swapaxes(-1, -2) @ g
        return Tensor._make(a @ b, (self, other), "matmul", backward)

    # ------------------------------------------------------------------ primitive unary ops
    def exp(self):
        out = np.exp(self.data)
        return Tensor._make(out, (self,), "exp", lambda g: (g * out,))

    def log(self):
        a = self.data
        return Tensor._make(np.log(a), (self,), "log", lambda g: (g / a,))

    def tanh(self):
        out = np.tanh(self.data)
        return Tensor._make(out, (self,), "tanh", lambda g: (g * (1 - out * out),))

    def relu(self):
        a = self.data
        return Tensor._make(np.maximum(a, 0), (self,), "relu", lambda g: (g * (a > 0),))

    # ------------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims=False):
        axes = _axes(axis, self.ndim)
        shape = self.shape

        def backward(g):  # every input element contributed once: spread g back over the summed axes
            return (np.broadcast_to(g if keepdims else np.expand_dims(g, axes), shape),)
        return Tensor._make(self.data.sum(axis=axes, keepdims=keepdims), (self,), "sum", backward)

    def max(self, axis=None, keepdims=False):
        """Max over axes. The gradient goes to the maximal element; ties share it equally."""
        axes = _axes(axis, self.ndim)
        a = self.data
        out = a.max(axis=axes, keepdims=True)

        def backward(g):
            winners = a == out
            share = winners / winners.sum(axis=axes, keepdims=True)
            return ((g if keepdims else np.expand_dims(g, axes)) * share,)
        return Tensor._make(out if keepdims else out.squeeze(axes), (self,), "max", backward)

    def softmax(self, axis=-1):
        """s = exp(x - max x) / sum exp(x - max x);  dx = s * (g - sum(g * s))  (the vector-Jacobian product)."""
        e = np.exp(self.data - self.data.max(axis=axis, keepdims=True))
        s = e / e.sum(axis=axis, keepdims=True)
        return Tensor._make(s, (self,), "softmax", lambda g: (s * (g - (g * s).sum(axis=axis, keepdims=True)),))

    def log_softmax(self, axis=-1):
        """x - logsumexp(x), stable for logits of any size;  dx = g - softmax(x) * sum(g)."""
        shifted = self.data - self.data.max(axis=axis, keepdims=True)
        out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        return Tensor._make(out, (self,), "log_softmax",
                            lambda g: (g - np.exp(out) * g.sum(axis=axis, keepdims=True),))

    # ------------------------------------------------------------------ movement
    def reshape(self, *shape):
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        try:
            out = self.data.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape {self.shape} into {shape}") from None
        old = self.shape
        return Tensor._make(out, (self,), "reshape", lambda g: (g.reshape(old),))

    view = reshape

    def permute(self, *dims):
        dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        n = self.data.ndim
        axes = [d % max(n, 1) for d in dims]                 # negative axes count from the end
        if sorted(axes) != list(range(n)):
            raise ValueError(f"permute: {dims} is not a permutation of the {n} axes of {self.shape}")
        inverse = sorted(range(n), key=axes.__getitem__)     # output axis i came from axes[i]: undo it
        return Tensor._make(self.data.transpose(axes), (self,), "permute", lambda g: (g.transpose(inverse),))

    def __getitem__(self, index):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index) if isinstance(index, tuple) else \
            (index.data if isinstance(index, Tensor) else index)
        try:
            out = self.data[index]
        except IndexError as e:
            raise IndexError(f"getitem: {e} (tensor of shape {self.shape})") from None
        a = self.data

        def backward(g):
            full = np.zeros_like(a)
            if _is_basic_index(index):
                full[index] = g
            else:
                np.add.at(full, index, g)  # an index may repeat: each occurrence adds its share
            return (full,)
        return Tensor._make(out, (self,), "getitem", backward)

    # ------------------------------------------------------------------ composed ops
    def __neg__(self): return self * -1.0
    def __sub__(self, other): return self + (-self._lift(other))
    def __truediv__(self, other): return self * self._lift(other) ** -1.0
    def __radd__(self, other): return self + other
    def __rmul__(self, other): return self * other
    def __rsub__(self, other): return self._lift(other) - self
    def __rtruediv__(self, other): return self._lift(other) / self
    def __rpow__(self, other): return self._lift(other) ** self
    def __rmatmul__(self, other): return self._lift(other) @ self

    def sqrt(self): return self ** 0.5
    def sigmoid(self): return (self * 0.5).tanh() * 0.5 + 0.5  # = 1/(1+e^-x), without overflow in e^-x

    def gelu(self):
        """GELU, tanh approximation (GPT-2): x (1 + tanh(c (x + 0.044715 x^3))) / 2, c = sqrt(2/pi).
        One node instead of eight: functional.gelu."""
        return 0.5 * self * (1 + (math.sqrt(2 / math.pi) * (self + 0.044715 * self ** 3)).tanh())

    def mean(self, axis=None, keepdims=False):
        n = math.prod(self.shape[a] for a in _axes(axis, self.ndim))
        return self.sum(axis, keepdims) * (1.0 / n)

    def var(self, axis=None, keepdims=False, correction=1):
        """Variance with Bessel's correction by default (as torch.var); correction=0 gives the biased one."""
        n = math.prod(self.shape[a] for a in _axes(axis, self.ndim))
        d = self - self.mean(axis, keepdims=True)
        return (d * d).sum(axis, keepdims) * (1.0 / max(n - correction, 1))

    def transpose(self, dim0=-2, dim1=-1):
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self.permute(*dims)

    T = property(lambda self: self.permute(*reversed(range(self.ndim))))

    def flatten(self, start_dim=0):
        return self.reshape(*self.shape[:start_dim], -1)

    def unsqueeze(self, axis):
        axis = axis % (self.ndim + 1)
        return self.reshape(*self.shape[:axis], 1, *self.shape[axis:])

    def masked_fill(self, mask, value):
        """Where mask is True put value (as torch.masked_fill); mask broadcasts against self."""
        return where(mask, value, self)

    def to(self, dtype):
        """Cast (float32 <-> float64); the gradient is cast back."""
        old = self.dtype
        return Tensor._make(self.data.astype(dtype), (self,), "cast", lambda g: (g.astype(old),))

    def float(self): return self.to(np.float32)
    def double(self): return self.to(np.float64)


def where(condition, a, b):
    """Elementwise `a if condition else b` (as torch.where); condition is a boolean array, no gradient."""
    cond = np.asarray(condition.data if isinstance(condition, Tensor) else condition, dtype=bool)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError("where: at least one of a, b must be a Tensor")
    a = b._lift(a) if isinstance(b, Tensor) else a
    b = a._lift(b)
    _broadcast_shape("where", cond.shape, a.shape, b.shape)

    def backward(g):
        return np.where(cond, g, 0).astype(g.dtype), np.where(cond, 0, g).astype(g.dtype)
    return Tensor._make(np.where(cond, a.data, b.data), (a, b), "where", backward)


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis (as torch.cat); each gets back its slice of the gradient."""
    tensors = tuple(tensors)
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor")
    try:
        out = np.concatenate([t.data for t in tensors], axis=axis)
    except ValueError:
        raise ValueError(f"concatenate: shapes {[t.shape for t in tensors]} do not match off axis {axis}") from None
    bounds = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    return Tensor._make(out, tensors, "concatenate", lambda g: tuple(np.split(g, bounds, axis=axis)))


def stack(tensors, axis=0):
    """Join tensors along a new axis (as torch.stack): concatenate of unsqueezed tensors."""
    return concatenate([t.unsqueeze(axis) for t in tensors], axis=axis)
