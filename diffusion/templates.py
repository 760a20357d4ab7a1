"""Templates: names with some letters given, the others generated.

`template="m__a"`: letters are fixed, `_` is one generated letter, and one `*` stands for any number (0 or more)
of generated letters: "ma*" (prefix), "*ette" (suffix), "a*a", "m_*". A template without `*` fixes the length;
with `*` the sampler draws the length first (length_first.py), among the lengths the template fits. The
reverse process then starts from the template laid out for that length (`lay_out`) and never changes its
letters. `edit_template` turns a name and the positions to redo into a template.
"""
from dataclasses import dataclass

import numpy as np

from .data import LETTERS, MASK, PAD

TEMPLATE_HELP = "use letters a-z, '_' for one generated letter and one '*' for any number of generated letters"


@dataclass(frozen=True)
class Template:
    """A parsed template: `head` and `tail` (a letter id, or None for a generated letter, per position) on
    either side of an optional `*`."""
    text: str
    head: tuple
    tail: tuple
    star: bool

    @property
    def min_length(self):
        return len(self.head) + len(self.tail)


def parse_template(text, L):
    """'m__a' / 'ma*' / '*a' -> Template. Raises ValueError (one line) for anything else."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"template {text!r} is empty; {TEMPLATE_HELP}")
    bad = next((c for c in text if c not in LETTERS + "_*"), None)
    if bad is not None:
        raise ValueError(f"template {text!r}: {bad!r} is not allowed; {TEMPLATE_HELP}")
    if text.count("*") > 1:
        raise ValueError(f"template {text!r} has {text.count('*')} '*'; at most one is allowed")
    head, star, tail = text.partition("*")
    if len(head) + len(tail) > L:
        raise ValueError(f"template {text!r} needs {len(head) + len(tail)} positions, more than L={L}")
    if not star and not head:
        raise ValueError(f"template {text!r} is empty; {TEMPLATE_HELP}")
    ids = lambda part: tuple(None if c == "_" else LETTERS.index(c) for c in part)  # noqa: E731
    return Template(text, ids(head), ids(tail), bool(star))


def edit_template(name, positions):
    """The template that re-masks `positions` (0-based) of `name`: edit_template('emma', [1, 2]) == 'e__a'."""
    if not isinstance(name, str) or not name or any(c not in LETTERS for c in name):
        raise ValueError(f"edit: {name!r} is not a name; names are letters a-z")
    positions = sorted(set(int(p) for p in positions))
    if not positions or positions[0] < 0 or positions[-1] >= len(name):
        raise ValueError(f"edit: positions must be between 0 and {len(name) - 1} for {name!r}, got {positions}")
    return "".join("_" if i in positions else c for i, c in enumerate(name))


def lay_out(template, n, L):
    """(N, L) rows for lengths n (N,): the template's letters at the head and, ending at n - 1, the tail; PAD
    from n on; MASK elsewhere."""
    N = len(n)
    x = np.full((N, L), MASK, dtype=np.int64)
    x[np.arange(L) >= n[:, None]] = PAD
    for j, tok in enumerate(template.head):
        if tok is not None:
            x[:, j] = tok
    for j, tok in enumerate(template.tail):
        if tok is not None:
            x[np.arange(N), n - len(template.tail) + j] = tok
    return x
