"""The docs stay true: every ```python block in README.md and docs/*.md runs (the blocks of one file in order,
sharing one namespace, as a reader pasting them into one session would), every relative link points at a
file that exists, every linked function name is still defined there, and the README's picture of a graph is
what its snippet prints (tests/test_graph.py tests render itself)."""
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def read(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return f.read()


def python_blocks(text):
    """(first line number, source) of each ```python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def test_there_are_docs_to_check():
    assert {"docs/autograd.md", "docs/diffusion.md"} <= set(DOCS)
    for rel in DOCS:
        assert python_blocks(read(rel)), f"{rel} has no ```python block"


@pytest.mark.parametrize("rel", DOCS)
def test_python_blocks_run_in_order(rel, capsys):
    namespace = {"__name__": "__doc_snippets__"}
    for line, source in python_blocks(read(rel)):
        code = compile("\n" * (line - 1) + source, os.path.join(ROOT, rel), "exec")   # tracebacks show .md lines
        try:
            exec(code, namespace)
        except Exception as e:
            raise AssertionError(f"{rel}: the ```python block at line {line} failed: {type(e).__name__}: {e}") from e
        assert capsys.readouterr().out.strip(), \
            f"{rel}: the block at line {line} prints nothing (snippets should show something)"


LINK = re.compile(r"\[([^\]]+)\]\(([^)#\s]+)(?:#[^)]*)?\)")


def links(rel):
    """(text, target) of each Markdown link outside code blocks."""
    return LINK.findall(re.sub(r"^```.*?^```", "", read(rel), flags=re.S | re.M))


@pytest.mark.parametrize("rel", DOCS)
def test_relative_links_resolve(rel):
    base = os.path.dirname(os.path.join(ROOT, rel))
    for text, target in links(rel):
        if re.match(r"[a-z]+:", target):
            continue                                                 # http(s):, mailto: ...
        assert os.path.exists(os.path.normpath(os.path.join(base, target))), \
            f"{rel}: [{text}]({target}) is a broken link"


@pytest.mark.parametrize("rel", DOCS)
def test_linked_names_exist(rel):
    """[`loss.diffusion_loss`](../diffusion/loss.py): diffusion_loss is still defined in loss.py."""
    base = os.path.dirname(os.path.join(ROOT, rel))
    for text, target in links(rel):
        name = text.strip("`")
        if not (text.startswith("`") and target.endswith(".py")) or "/" in name or name.endswith(".py"):
            continue
        ident = name.split(".")[-1]
        source = read(os.path.relpath(os.path.normpath(os.path.join(base, target)), ROOT))
        defined = re.search(rf"^\s*(def|class)\s+{re.escape(ident)}\b|^{re.escape(ident)}\s*=", source, re.M)
        assert defined or ident == os.path.basename(target)[:-3], f"{rel}: `{name}` is not defined in {target}"


def test_readme_render_picture_is_what_render_prints(capsys):
    """The README shows render()'s output under its snippet: it must be what the snippet prints."""
    match = re.search(r"```python\n((?:(?!```).)*?render\(.*?)```\n\n```\n(.*?)```", read("README.md"), re.S)
    assert match, "README: no render snippet followed by its output"
    exec(compile(match.group(1), "README.md", "exec"), {})
    assert capsys.readouterr().out == match.group(2)
