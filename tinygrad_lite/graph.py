"""A text picture of an autograd graph: the Tensor that backward() would start from, as an indented tree.

micrograd's draw_dot idea without graphviz. Each line is one tensor: its name (if given), the op that made it
("leaf" for a tensor you created with requires_grad=True, "const" for one that needs no gradient), its shape,
and its .grad once backward() has filled it (leaves, and tensors that called retain_grad()).

    from tinygrad_lite.graph import render
    print(render(loss, names=dict(w=w, x=x)))

The tree reads top-down from the output to the inputs, the same direction backward() walks. A tensor used by
several ops is drawn once, tagged #k, and later lines say "(see #k)". backward() frees the graph (it drops
each node's inputs) unless called with retain_graph=True, so render *before* backward(), or call
backward(retain_graph=True) to see the graph and the gradients together.
Iterative (an explicit stack), so a 10,000-op chain renders without RecursionError.
"""
import numpy as np

from . import tensor as _tensor

_UNICODE = ("├─ ", "└─ ", "│  ", "   ")
_ASCII = ("|-- ", "`-- ", "|   ", "    ")


def _short(array, max_elements):
    array = np.asarray(array)
    if array.size == 1:
        return f"{array.item():.4g}"
    if array.size > max_elements:
        return f"<{array.size} values, mean {array.mean():.4g}, |max| {np.abs(array).max():.4g}>"
    return np.array2string(array, precision=4, separator=", ", suppress_small=True).replace("\n", "")


def _kind(node):
    if node._op is not None:
        return node._op
    return "leaf" if node.requires_grad else "const"


def _inputs(node):
    return tuple(node._parents)


def _in_degrees(root):
    """How many times each tensor (by id) is an input, over the unique nodes reachable from root."""
    counts, seen, stack = {}, {id(root)}, [root]
    while stack:
        node = stack.pop()
        for p in _inputs(node):
            counts[id(p)] = counts.get(id(p), 0) + 1
            if id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    return counts, len(seen)


def render(tensor, names=None, values=False, max_depth=64, max_elements=6, ascii=False):
    """The graph that produced `tensor` as indented text (one line per tensor, output first).

    names: {name: Tensor} labels to show, e.g. dict(x=x) or dict(model.named_parameters()).
    values: also show each tensor's data (size-1 constants always show theirs).
    max_depth: deeper inputs are summarized in one line (None: no limit; the text grows with depth^2).
    max_elements: arrays larger than this print as <n values, mean, |max|>.
    ascii: draw the tree with |-- and `-- instead of box-drawing characters.
    """
    labels = {id(t): name for name, t in (names or {}).items()}
    branch, last, pipe, blank = _ASCII if ascii else _UNICODE
    freed = getattr(_tensor, "_freed_graph", None)
    counts, total = _in_degrees(tensor)
    tags, drawn, shown, lines, cut = {}, set(), set(), [], False

    # (node, prefix for this line, prefix for its children, depth); popped in pre-order
    stack = [(tensor, "", "", 0)]
    while stack:
        node, head, tail, depth = stack.pop()
        key = id(node)
        text = (labels[key] + ": " if key in labels else "") + _kind(node)
        if key in drawn:                                       # a shared tensor, already drawn with its inputs
            lines.append(f"{head}{text}  (see {tags[key]})")
            continue
        if counts.get(key, 0) > 1:
            tags[key] = f"#{len(tags) + 1}"
            text = f"{tags[key]} {text}"
        text += f" {node.shape}"
        if values or (node._op is None and not node.requires_grad and node.size == 1):
            text += f" = {_short(node.data, max_elements)}"
        if node.grad is not None:
            text += f"  grad={_short(node.grad, max_elements)}"
        if freed is not None and node._backward is freed:
            text += "  (inputs freed by backward(); use retain_graph=True to keep them)"
        inputs = _inputs(node)
        shown.add(key)
        if inputs and max_depth is not None and depth >= max_depth:
            lines.append(f"{head}{text}")
            lines.append(f"{tail}{last}... ({len(inputs)} input(s) deeper than max_depth={max_depth})")
            cut = True
            continue
        lines.append(head + text)
        drawn.add(key)
        for i in reversed(range(len(inputs))):                 # reversed: the first input is drawn first
            end = i == len(inputs) - 1
            stack.append((inputs[i], tail + (last if end else branch), tail + (blank if end else pipe), depth + 1))
    if cut:
        lines.append(f"({total - len(shown)} of {total} tensors not drawn: render(..., max_depth=None) shows all)")
    return "\n".join(lines)


__all__ = ["render"]
