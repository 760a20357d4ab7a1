"""Sample-quality figures for a list of generated names, against the training and test names."""
import numpy as np


def length_tv(samples, reference):
    """Total-variation distance between the length distributions: 1/2 sum_n |P(n) - Q(n)|."""
    top = max(max(map(len, samples), default=0), max(map(len, reference), default=0)) + 1
    p = np.bincount([len(s) for s in samples], minlength=top) / max(len(samples), 1)
    q = np.bincount([len(s) for s in reference], minlength=top) / max(len(reference), 1)
    return 0.5 * float(np.abs(p - q).sum())


def sample_report(samples, train_names, test_names):
    """dict: novel (fraction not in train), unique (distinct / total), length_tv (to test), mean_length."""
    train = set(train_names)
    n = max(len(samples), 1)
    return dict(novel=sum(s not in train for s in samples) / n,
                unique=len(set(samples)) / n,
                length_tv=length_tv(samples, test_names),
                mean_length=float(np.mean([len(s) for s in samples])) if samples else 0.0)


def format_report(r):
    return (f"novel {100 * r['novel']:.1f}%  unique {100 * r['unique']:.1f}%  "
            f"length TV {r['length_tv']:.3f}  mean length {r['mean_length']:.2f}")
