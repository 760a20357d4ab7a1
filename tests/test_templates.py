"""diffusion/templates.py: parsing templates and turning an edit into a template (templates in the sampler, with
every variant, are tested in test_sampler.py)."""
import re

import pytest

from diffusion.data import decode
from diffusion.sampler import edit_template, parse_template, sample
from helpers import tiny_transformer

MODEL = tiny_transformer()


def test_parse_and_edit_templates():
    t = parse_template("m_*a", 6)
    assert t.head == (12, None) and t.tail == (0,) and t.star and t.min_length == 3
    assert edit_template("emma", [1, 2]) == "e__a" and edit_template("emma", (0,)) == "_mma"
    for name, positions in (("emma", [4]), ("emma", []), ("Emma", [0]), ("", [0])):
        with pytest.raises(ValueError):
            edit_template(name, positions)
    out = sample(MODEL, 20, seed=0, template=edit_template("abba", [1]))
    assert all(re.fullmatch("a[a-z]ba", decode(r)) for r in out.tokens)
