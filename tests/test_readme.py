"""The README stays true: its file table matches the code and its generated sections are filled in (its Python
snippets run in tests/test_docs.py, with the docs')."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()


def section(name):
    match = re.search(rf"<!-- generated:{name} -->\n(.*?)<!-- /generated:{name} -->", README, re.S)
    assert match, f"README has no generated section {name!r}"
    return match.group(1).strip()


@pytest.mark.scripts
def test_file_table_matches_the_code():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "update_readme.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", ["results", "temperature", "contrast", "compare", "compare_long", "compare_long60k",
                                  "objectives", "long", "bench", "sampler"])
def test_generated_sections_are_filled(name):
    body = section(name)
    assert body.startswith(("|", "**")) and body.count("\n") >= 2, \
        f"run python scripts/update_readme.py ({name} is empty)"


def test_pictures_are_generated():
    body = section("pictures")
    assert body.startswith("```") and "forward process" in body and "reverse process" in body
