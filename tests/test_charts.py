"""diffusion/charts.py: a curve lands where its values say, clipping keeps it on the grid, the axes are labelled;
histogram bars are proportional to the fractions and print them."""
import numpy as np

from diffusion.charts import MARKS, histogram, line_plot


def grid(lines, height):
    """The plotting area of a line_plot: `height` rows of characters right of the axis."""
    return [line.split("|", 1)[1] for line in lines[:height]]


def test_a_rising_line_goes_from_the_bottom_left_to_the_top_right():
    x = np.linspace(0, 1, 50)
    lines = line_plot(x, {"y = x": x}, height=5, width=20)
    rows = grid(lines, 5)
    assert rows[4][0] == MARKS[0] and rows[0][19] == MARKS[0]          # (0, 0) bottom left, (1, 1) top right
    heights = [next(r for r in range(5) if rows[r][c] == MARKS[0]) for c in range(20)]
    assert heights == sorted(heights, reverse=True)                     # rows from the top: it only climbs
    assert lines[0].startswith("1 |") and lines[4].startswith("0 |") and "* y = x" in lines[-1]


def test_later_curves_have_their_own_mark_and_clipping_keeps_them_on_the_grid():
    x = np.linspace(0, 1, 30)
    lines = line_plot(x, {"flat": np.full(30, 0.5), "huge": np.full(30, 100.0)}, height=5, width=10,
                      y_range=(0, 1))
    rows = grid(lines, 5)
    assert rows[0] == MARKS[1] * 10 and rows[2] == MARKS[0] * 10         # 100 is drawn at the top, 0.5 mid-way
    assert lines[0].startswith("1 |") and "o huge" in lines[-1]


def test_a_shorter_curve_stops_where_its_values_end():
    x = np.linspace(0, 1, 30)
    lines = line_plot(x, {"long": np.full(30, 0.0), "short": np.full(15, 1.0)}, height=5, width=10)
    rows = grid(lines, 5)
    assert rows[4] == MARKS[0] * 10                                     # the full curve spans the axis
    assert rows[0] == MARKS[1] * 5 + " " * 5                            # the half-length one stops half-way


def test_histogram_bars_are_proportional_and_print_the_fractions():
    lines = histogram([1, 2, "3+"], {"a": [0.5, 0.25, 0.25], "b": [0.0, 0.0, 1.0]}, width=8)
    assert lines[0].split("|")[1].split() == ["a", "b"]
    one, two, three = (line.split("|", 1)[1] for line in lines[1:])
    assert one.count("#") == 4 and "50.0%" in one and "0.0%" in one       # 0.5 of the largest (1.0): half the bar
    assert two.count("#") == 2 and three.count("#") == 2 + 8 and "100.0%" in three
    assert lines[3].startswith("3+ |")
