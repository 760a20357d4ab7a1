"""Text charts for the docs' pictures: curves on a character grid, and histograms as rows of bars. Plain
characters, so the pictures need no plotting library, sit in Markdown as they are, and a test can read them."""
import numpy as np

MARKS = "*o+x#"


def line_plot(x, curves, height=12, width=64, y_range=None):
    """Lines of text: each curve of `curves` ({label: y values over x}) drawn with its own mark on a
    height x width grid (later curves on top), the y range written at the top and bottom of the axis, the x
    range under it, and a legend. A curve shorter than x (a shorter run) is drawn over x[:len(y)] and stops
    there. y_range: (low, high) to clip to (default: the curves' own range)."""
    x = np.asarray(x, dtype=np.float64)
    ys = {label: np.asarray(y, dtype=np.float64) for label, y in curves.items()}
    longer = [label for label, y in ys.items() if len(y) > len(x)]
    if longer:
        raise ValueError(f"line_plot: curve {longer[0]!r} has more values than x ({len(x)})")
    low, high = y_range or (min(y.min() for y in ys.values()), max(y.max() for y in ys.values()))
    high = high if high > low else low + 1.0
    grid = [[" "] * width for _ in range(height)]
    columns = np.linspace(x.min(), x.max(), width)
    for mark, y in zip(MARKS, ys.values()):
        covered = columns <= x[len(y) - 1]                          # the columns this curve reaches
        at = np.interp(columns[covered], x[:len(y)], y)             # the curve at each of their x
        rows = np.rint((high - np.clip(at, low, high)) / (high - low) * (height - 1)).astype(int)
        for column, row in enumerate(rows):
            grid[row][column] = mark
    left = max(len(f"{high:g}"), len(f"{low:g}"))
    lines = [f"{(f'{high:g}' if i == 0 else f'{low:g}' if i == height - 1 else ''):>{left}} |{''.join(row)}"
             for i, row in enumerate(grid)]
    lines.append(" " * left + " +" + "-" * width)
    lines.append(" " * left + f"  {x.min():<{width // 2}g}{x.max():>{width - width // 2}g}")
    lines.append(" " * left + "  " + "   ".join(f"{mark} {label}" for mark, label in zip(MARKS, ys)))
    return lines


def histogram(bins, series, width=24):
    """Lines of text, one per bin: its label, then for each series ({label: fraction per bin}) a bar of '#'
    (the largest fraction of all fills `width`) and the fraction in percent; a header names the series."""
    series = {label: np.asarray(v, dtype=np.float64) for label, v in series.items()}
    top = max(float(v.max()) for v in series.values()) or 1.0
    label_width = max(len(str(b)) for b in bins)
    cell = width + 7
    lines = [" " * label_width + " | " + "".join(f"{label[:cell - 1]:<{cell}}" for label in series)]
    for i, b in enumerate(bins):
        cells = [f"{'#' * int(round(v[i] / top * width)):<{width}} {100 * v[i]:4.1f}%" for v in series.values()]
        lines.append(f"{str(b):>{label_width}} | " + " ".join(cells))
    return lines
