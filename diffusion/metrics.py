"""Sample-quality figures for a list of generated names, against the training and test names."""
import numpy as np

from .data import LETTERS, PAD

BOUNDARY = PAD   # the start/end symbol of a name in the bigram counts (letters are 0..25)
SYMBOLS = len(LETTERS) + 1


def length_tv(samples, reference):
    """Total-variation distance between the length distributions: 1/2 sum_n |P(n) - Q(n)|."""
    top = max(max(map(len, samples), default=0), max(map(len, reference), default=0)) + 1
    p = np.bincount([len(s) for s in samples], minlength=top) / max(len(samples), 1)
    q = np.bincount([len(s) for s in reference], minlength=top) / max(len(reference), 1)
    return 0.5 * float(np.abs(p - q).sum())


def bigram_counts(names):
    """(27, 27) counts of character bigrams over '^name$' (index 26 is both ^ and $): a name of n letters
    gives n + 1 bigrams, e.g. 'ab' -> ^a, ab, b$."""
    counts = np.zeros((SYMBOLS, SYMBOLS))
    for name in names:
        ids = [BOUNDARY] + [LETTERS.index(c) for c in name] + [BOUNDARY]
        np.add.at(counts, (ids[:-1], ids[1:]), 1)
    return counts


def bigram_kl(samples, train_names, smoothing=1.0):
    """KL(P || Q) in nats between the character-bigram distributions of the samples (P, the empirical joint
    frequencies) and of the training names (Q, add-`smoothing` over all 27 x 27 cells, so Q > 0):
        KL = sum_{ab} P(ab) log(P(ab) / Q(ab)).
    0 when the samples reproduce train's bigram statistics (up to the smoothing)."""
    p = bigram_counts(samples)
    if not p.sum():
        raise ValueError("bigram_kl: no samples")
    p = p / p.sum()
    q = bigram_counts(train_names) + smoothing
    q = q / q.sum()
    seen = p > 0
    return float((p[seen] * np.log(p[seen] / q[seen])).sum())


def generative_nll(ar_model, names):
    """nats/char of `names` under the AR model: sum of per-name -log p(name) / sum (letters + 1 end token).
    Low means the names look like data to the AR model; read it with the diversity figures (a sampler that
    repeats the most likely names scores low too)."""
    from .autoregressive import name_nll            # here, so metrics stays importable without the model code
    names = list(names)
    if not names:
        raise ValueError("generative_nll: no names")
    return float(name_nll(ar_model, names).sum() / sum(len(n) + 1 for n in names))


def sample_report(samples, train_names, test_names, ar_model=None):
    """dict: novel (fraction not in train), unique (distinct / total), length_tv (to test), mean_length,
    bigram_kl (to train) and, given an AR model, generative_nll (nats/char under it) and novel_generative_nll
    (the same over the novel samples only: an AR judge trained on the same names scores a copied training name
    lower than a real name it never saw, so copies flatter generative_nll; nan if none is novel)."""
    train = set(train_names)
    n = max(len(samples), 1)
    novel = [s for s in samples if s not in train]
    report = dict(novel=len(novel) / n,
                  unique=len(set(samples)) / n,
                  length_tv=length_tv(samples, test_names),
                  mean_length=float(np.mean([len(s) for s in samples])) if samples else 0.0,
                  bigram_kl=bigram_kl(samples, train_names) if samples else float("nan"))
    if ar_model is not None:
        report["generative_nll"] = generative_nll(ar_model, samples) if samples else float("nan")
        report["novel_generative_nll"] = generative_nll(ar_model, novel) if novel else float("nan")
    return report


def format_report(r):
    text = (f"novel {100 * r['novel']:.1f}%  unique {100 * r['unique']:.1f}%  "
            f"length TV {r['length_tv']:.3f}  mean length {r['mean_length']:.2f}")
    if "bigram_kl" in r:
        text += f"  bigram KL {r['bigram_kl']:.4f}"
    if "generative_nll" in r:
        text += f"  gen NLL {r['generative_nll']:.3f}"
    if "own_nll" in r:
        text += f"  own NLL {r['own_nll']:.3f}"
    return text
