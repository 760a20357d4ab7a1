"""Names data: loading with clear errors, the canonical split, and the character tokenizer.

Vocabulary (28 tokens): 'a'..'z' -> 0..25, PAD = 26 (also the end-of-name token), MASK = 27.
A name of n letters becomes a row of L tokens: its letters, then PAD up to L. The model predicts PAD like a
letter, which is how it learns lengths. Names longer than L letters do not fit and are dropped (counted).
"""
import hashlib
import os
import string
from dataclasses import dataclass, field

import numpy as np

LETTERS = string.ascii_lowercase
PAD, MASK = 26, 27
VOCAB_SIZE = 28          # tokens an input row can hold
NUM_CLASSES = 27         # tokens the denoiser predicts: letters + PAD, never MASK (SUBS)
DEFAULT_NAMES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "names.txt")


class NamesFileError(ValueError):
    """A names file that cannot be used; the message names the file and line."""


@dataclass
class NamesReport:
    """What loading normalized or dropped, so scripts can say it."""
    names: list
    sha256: str = ""          # of the file's bytes: a checkpoint records it to recognise its data later
    lowercased: int = 0
    stripped: int = 0
    blank_lines: int = 0
    duplicates: int = 0
    messages: list = field(default_factory=list)

    def summary(self):
        parts = [f"{n} {what}" for n, what in [(self.lowercased, "lowercased"), (self.stripped, "whitespace-stripped"),
                 (self.blank_lines, "blank lines skipped"), (self.duplicates, "duplicates dropped")] if n]
        return ", ".join(parts)


def load_names(path=DEFAULT_NAMES):
    """Read one name per line. Lowercases, strips surrounding whitespace, skips blank lines, drops repeats
    (keeping the first). Raises NamesFileError naming file and line for anything else: digits, inner spaces,
    punctuation, non-ASCII, or a file with no names. Returns a NamesReport (its .names in file order)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise NamesFileError(f"{path}: cannot read names file ({e.strerror})") from None
    report = NamesReport(names=[], sha256=hashlib.sha256(raw).hexdigest())
    seen = set()
    for lineno, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            shown = line[:40].decode("utf-8", errors="replace")
            raise NamesFileError(f"{path}:{lineno}: {shown!r} has non-ASCII characters; "
                                 "names must be letters a-z") from None
        name = text.strip()
        if not name:
            report.blank_lines += 1
            continue
        report.stripped += name != text
        if name != name.lower():
            report.lowercased += 1
            name = name.lower()
        bad = next((c for c in name if c not in LETTERS), None)
        if bad is not None:
            raise NamesFileError(f"{path}:{lineno}: {name!r} contains {bad!r}; names must be letters a-z only")
        if name in seen:
            report.duplicates += 1
            continue
        seen.add(name)
        report.names.append(name)
    if not report.names:
        raise NamesFileError(f"{path}: no names found (the file is empty)")
    return report


SPLIT_RULE = "name i (0-based, after dropping repeats): test if i % 20 == 0, validation if i % 20 == 1, else train"


def split(names):
    """The canonical split (SPLIT_RULE) by 0-based index i: test i % 20 == 0, validation i % 20 == 1, train the
    rest."""
    test = [n for i, n in enumerate(names) if i % 20 == 0]
    val = [n for i, n in enumerate(names) if i % 20 == 1]
    train = [n for i, n in enumerate(names) if i % 20 >= 2]
    return train, val, test


def encode(names, L):
    """names -> (N, L) int64 tokens (letters then PAD). Every name must have at most L letters."""
    x = np.full((len(names), L), PAD, dtype=np.int64)
    for row, name in zip(x, names):
        if len(name) > L:
            raise ValueError(f"encode: {name!r} has {len(name)} letters, more than L={L}")
        row[:len(name)] = [LETTERS.index(c) for c in name]
    return x


def decode(tokens):
    """One row of tokens -> the letters before the first PAD (MASK shown as '_')."""
    out = []
    for tok in np.asarray(tokens).tolist():
        if tok == PAD:
            break
        out.append("_" if tok == MASK else LETTERS[tok])
    return "".join(out)


def show(tokens):
    """A row as it is, e.g. 'ma_y....': letters, '_' for MASK, '.' for PAD (for the trajectory views)."""
    return "".join("." if t == PAD else "_" if t == MASK else LETTERS[t] for t in np.asarray(tokens).tolist())


def chars_per_name(x):
    """Characters a name costs in nats/char: its letters + 1 end token (makemore's unit). x: (N, L)."""
    return (x != PAD).sum(axis=1) + 1


@dataclass
class NamesData:
    """The three splits as token arrays (N, L), and what was dropped for not fitting in L."""
    L: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_names: list
    dropped: dict
    report: NamesReport
    path: str = DEFAULT_NAMES

    def record(self):
        """What a checkpoint stores about its data, so a tool can find it again and tell when it changed."""
        return dict(names=os.path.abspath(self.path), sha256=self.report.sha256, split=SPLIT_RULE, L=self.L)

    @property
    def longest(self):
        """Letters in the file's longest name (before any is dropped for L)."""
        return max(map(len, self.report.names))

    @classmethod
    def load(cls, path=DEFAULT_NAMES, L=16):
        report = load_names(path)
        splits = split(report.names)
        kept = [[n for n in part if len(n) <= L] for part in splits]
        dropped = {k: len(a) - len(b) for k, a, b in zip(("train", "val", "test"), splits, kept)}
        if not kept[0] or not kept[2]:
            raise NamesFileError(f"{path}: too few names of at most {L} letters to make train and test splits "
                                 f"(train {len(kept[0])}, test {len(kept[2])})")
        return cls(L, encode(kept[0], L), encode(kept[1], L), encode(kept[2], L), kept[0], dropped, report, path)
