"""diffusion/data.py: loading the names file (clear errors naming file and line, normalization, long names) and
the canonical split."""
import re

import pytest
from hypothesis import given, strategies as st

from diffusion.data import NamesData, NamesFileError, decode, load_names
from helpers import write


@pytest.mark.parametrize("content, line, what", [
    ("anna\nb0b\n", 2, "'0'"),
    ("anna\nmary ann\n", 2, "' '"),
    ("anna\nzoë\n".encode("utf-8"), 2, "non-ASCII"),
    ("anna\nst.john\n", 2, "'.'"),
])
def test_bad_names_file_names_file_and_line(tmp_path, content, line, what):
    path = write(tmp_path, content)
    with pytest.raises(NamesFileError) as e:
        load_names(path)
    assert f"{path}:{line}:" in str(e.value) and what in str(e.value)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_names_file(tmp_path, content):
    with pytest.raises(NamesFileError, match="no names"):
        load_names(write(tmp_path, content))


def test_missing_names_file(tmp_path):
    with pytest.raises(NamesFileError, match="cannot read"):
        load_names(str(tmp_path / "nope.txt"))


def test_names_file_is_normalized_and_reported(tmp_path):
    report = load_names(write(tmp_path, "Anna \n\nBOB\r\nanna\ncarl\n"))
    assert report.names == ["anna", "bob", "carl"]
    assert (report.lowercased, report.stripped, report.blank_lines, report.duplicates) == (2, 1, 1, 1)


@given(st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC \t", min_size=0, max_size=12), max_size=30))
def test_loader_never_crashes_on_letters_and_spaces(tmp_path_factory, lines):
    path = write(tmp_path_factory.mktemp("n"), "\n".join(lines))
    try:
        report = load_names(path)
    except NamesFileError as e:
        assert path in str(e)            # the clear error path, naming the file
        return
    assert all(re.fullmatch("[a-z]+", n) for n in report.names) and len(set(report.names)) == len(report.names)


def test_long_names_are_dropped_and_counted(tmp_path):
    names = [f"{'a' * (i % 10 + 1)}{chr(97 + i % 26)}" for i in range(200)]
    data = NamesData.load(write(tmp_path, "\n".join(dict.fromkeys(names))), L=8)
    assert sum(data.dropped.values()) == sum(len(n) > 8 for n in dict.fromkeys(names))
    assert data.train.shape[1] == 8


def test_names_data_split_is_canonical():
    data = NamesData.load()
    assert len(data.test) == 1600 and len(data.val) == 1600 and len(data.train) == 28800
    names = data.report.names
    assert decode(data.test[0]) == names[0] and decode(data.test[1]) == names[20]
    assert decode(data.val[0]) == names[1] and decode(data.train[0]) == names[2]
    assert not set(map(decode, data.test)) & set(data.train_names)
