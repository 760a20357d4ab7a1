"""tinygrad_lite/graph.py: render draws the graph an output records, as text (micrograd's draw_dot without
graphviz): each op once, shared nodes referenced, deep chains without recursion, gradients when asked."""
import re

import numpy as np

from tinygrad_lite import Tensor, functional as F
from tinygrad_lite.graph import render


def small_graph():
    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    w = Tensor(np.array([0.5, 0.5, 0.5]), requires_grad=True)
    h = (x * w).tanh()
    return x, w, h, (h * h + 2 * x).sum()


def test_render_structure():
    x, w, h, loss = small_graph()
    lines = render(loss, names=dict(x=x, w=w)).splitlines()
    assert lines[0] == "sum ()"                                      # the output first, then its inputs
    assert lines[1] == "└─ add (3,)"
    assert [line.lstrip("│├└─ ") for line in lines] == [
        "sum ()", "add (3,)", "mul (3,)", "#1 tanh (3,)", "mul (3,)", "#2 x: leaf (3,)", "w: leaf (3,)",
        "tanh  (see #1)", "mul (3,)", "x: leaf  (see #2)", "const () = 2"]
    depth = [len(line) - len(line.lstrip("│├└─ ")) for line in lines]
    assert depth == [0, 3, 6, 9, 12, 15, 15, 9, 6, 9, 9]             # inputs indented one level below their op
    assert all(line.isascii() for line in render(loss, ascii=True).splitlines())


def test_shared_nodes_drawn_once():
    x = Tensor(np.ones(2), requires_grad=True)
    y = x.exp()
    z = y * y + y                                                    # y used three times, x once through y
    text = render(z.sum())
    assert text.count("exp (2,)") == 1 and text.count("(see #1)") == 2
    assert text.count("leaf") == 1                                   # x is drawn under y's single expansion
    a = Tensor(np.ones(2), requires_grad=True)
    diamond = a + a                                                  # the same tensor twice in one op
    assert render(diamond, names=dict(a=a)).splitlines()[1:] == ["├─ #1 a: leaf (2,)", "└─ a: leaf  (see #1)"]


def test_deep_chain_renders_iteratively():
    x = Tensor(np.array([0.5]), requires_grad=True)
    out = x
    for _ in range(5000):
        out = out.tanh()
    full = render(out, max_depth=None, ascii=True).splitlines()     # recursion would stop near depth 1,000
    assert len(full) == 5001 and full[-1].strip() == "`-- leaf (1,)" and full[-2].strip().startswith("`-- tanh")
    short = render(out).splitlines()                                 # default: cut at max_depth, and say so
    assert len(short) < 100 and "max_depth" in short[-1] and "4936 of 5001 tensors not drawn" in short[-1]


def test_gradients_after_backward_with_retain_graph():
    x, w, h, loss = small_graph()
    before = render(loss, names=dict(x=x, w=w, h=h))
    assert "grad=" not in before
    h.retain_grad()
    loss.backward(retain_graph=True)
    after = render(loss, names=dict(x=x, w=w, h=h))
    assert after.count("grad=") == 3                                 # x, w and h; not the other intermediates
    x_line = next(line for line in after.splitlines() if "x: leaf (3,)" in line)
    assert f"grad={np.array2string(x.grad, precision=4, separator=', ')}" in x_line
    assert "h: tanh (3,)  grad=" in after and "w: leaf (3,)  grad=" in after
    assert re.sub(r"  grad=.*$", "", after, flags=re.M) == before   # the same tree, gradients added


def test_render_after_backward_without_retain_graph_says_freed():
    x, w, h, loss = small_graph()
    loss.backward()
    text = render(loss)
    assert len(text.splitlines()) == 1 and "freed" in text and "retain_graph=True" in text


def test_render_large_arrays_and_values():
    W = Tensor(np.arange(20.0).reshape(4, 5), requires_grad=True)
    out = F.relu(W).sum()
    text = render(out, values=True)
    assert "<20 values, mean 9.5, |max| 19>" in text and "sum () = 190" in text
    assert render(W).splitlines() == ["leaf (4, 5)"]                 # a lone leaf is a one-line graph
