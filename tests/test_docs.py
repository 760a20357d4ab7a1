"""The docs stay true: every ```python block in README.md and docs/*.md runs (the blocks of one file in order,
sharing one namespace, as a reader pasting them into one session would), every relative link points at a
file that exists, every linked function name is still defined there; and tinygrad_lite.graph.render draws
what it claims."""
import glob
import os
import re

import numpy as np
import pytest

from tinygrad_lite import Tensor, functional as F
from tinygrad_lite.graph import render

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def read(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return f.read()


def python_blocks(text):
    """(first line number, source) of each ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def test_there_are_docs_to_check():
    assert {"docs/autograd.md", "docs/diffusion.md"} <= set(DOCS)
    for rel in DOCS:
        assert python_blocks(read(rel)), f"{rel} has no ```python block"


@pytest.mark.parametrize("rel", DOCS)
def test_python_blocks_run_in_order(rel, capsys):
    namespace = {"__name__": "__doc_snippets__"}
    for line, source in python_blocks(read(rel)):
        code = compile("\n" * (line - 1) + source, os.path.join(ROOT, rel), "exec")   # tracebacks show .md lines
        try:
            exec(code, namespace)
        except Exception as e:
            raise AssertionError(f"{rel}: the ```python block at line {line} failed: {type(e).__name__}: {e}") from e
        assert capsys.readouterr().out.strip(), \
            f"{rel}: the block at line {line} prints nothing (snippets should show something)"


LINK = re.compile(r"\[([^\]]+)\]\(([^)#\s]+)(?:#[^)]*)?\)")


def links(rel):
    """(text, target) of each Markdown link outside code blocks."""
    return LINK.findall(re.sub(r"^```.*?^```", "", read(rel), flags=re.S | re.M))


@pytest.mark.parametrize("rel", DOCS)
def test_relative_links_resolve(rel):
    base = os.path.dirname(os.path.join(ROOT, rel))
    for text, target in links(rel):
        if re.match(r"[a-z]+:", target):
            continue                                                 # http(s):, mailto: ...
        assert os.path.exists(os.path.normpath(os.path.join(base, target))), \
            f"{rel}: [{text}]({target}) is a broken link"


@pytest.mark.parametrize("rel", DOCS)
def test_linked_names_exist(rel):
    """[`loss.diffusion_loss`](../diffusion/loss.py): diffusion_loss is still defined in loss.py."""
    base = os.path.dirname(os.path.join(ROOT, rel))
    for text, target in links(rel):
        name = text.strip("`")
        if not (text.startswith("`") and target.endswith(".py")) or "/" in name or name.endswith(".py"):
            continue
        ident = name.split(".")[-1]
        source = read(os.path.relpath(os.path.normpath(os.path.join(base, target)), ROOT))
        defined = re.search(rf"^\s*(def|class)\s+{re.escape(ident)}\b|^{re.escape(ident)}\s*=", source, re.M)
        assert defined or ident == os.path.basename(target)[:-3], f"{rel}: `{name}` is not defined in {target}"


# ---------------------------------------------------------------------------------------------- graph.render

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


def test_readme_render_picture_is_what_render_prints(capsys):
    """The README shows render()'s output under its snippet: it must be what the snippet prints."""
    match = re.search(r"```python\n((?:(?!```).)*?render\(.*?)```\n\n```\n(.*?)```", read("README.md"), re.S)
    assert match, "README: no render snippet followed by its output"
    exec(compile(match.group(1), "README.md", "exec"), {})
    assert capsys.readouterr().out == match.group(2)
