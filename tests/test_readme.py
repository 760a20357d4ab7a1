"""The README stays true: its file table matches the code, its generated sections are filled in, and every
Python snippet in it runs as written."""
import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()


def load_update_readme():
    spec = importlib.util.spec_from_file_location("update_readme", os.path.join(ROOT, "scripts", "update_readme.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def section(name):
    match = re.search(rf"<!-- generated:{name} -->\n(.*?)<!-- /generated:{name} -->", README, re.S)
    assert match, f"README has no generated section {name!r}"
    return match.group(1).strip()


def test_file_table_matches_the_code():
    assert section("files") == load_update_readme().file_table(), \
        "README file table is stale: run python scripts/update_readme.py --files"


@pytest.mark.parametrize("name", ["results", "temperature", "contrast", "compare", "compare_long", "compare_long60k",
                                  "objectives", "long", "bench", "sampler"])
def test_generated_sections_are_filled(name):
    body = section(name)
    assert body.startswith(("|", "**")) and body.count("\n") >= 2, \
        f"run python scripts/update_readme.py ({name} is empty)"


def test_pictures_are_generated():
    body = section("pictures")
    assert body.startswith("```") and "forward process" in body and "reverse process" in body


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", README, re.S))
def test_readme_python_snippets_run(block, capsys):
    exec(compile(block, "README.md", "exec"), {})
