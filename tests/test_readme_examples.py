"""The Python examples of the documentation run as written.

The API examples sit between `<!-- api-examples -->` and `<!-- /api-examples -->` in docs/API.md; the
README's own encode example follows `<!-- example: encode -->`. The blocks run in order in one namespace,
as from the repository root: they load the shipped demo model ("demo") and an image of assets/ (copied into
a scratch folder, so the files the examples write land there).
"""
from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- api-examples -->", "<!-- /api-examples -->"
MIN_BLOCKS = 5  # load, encode, per-image epsilon + budgets, decode, create_model


def api_examples_source() -> tuple[Path, str]:
    page = REPO_ROOT / "docs" / "API.md"
    return page, page.read_text()


def python_blocks(text: str) -> list[str]:
    start = text.index(START)
    end = text.index(END, start)  # a missing end marker is an error, not "run everything after"
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_api_examples_are_found():
    path, text = api_examples_source()
    assert text.count(START) == 1 and text.count(END) == 1, path
    assert len(python_blocks(text)) >= MIN_BLOCKS, path


def test_api_examples_run_as_written(tmp_path, monkeypatch, capsys):
    path, text = api_examples_source()
    shutil.copytree(REPO_ROOT / "assets", tmp_path / "assets")
    monkeypatch.chdir(tmp_path)

    namespace: dict = {"__name__": "__readme__"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_model warns about random base weights, as intended
        for i, block in enumerate(python_blocks(text)):
            exec(compile(block, f"{path.name} api example {i + 1}", "exec"), namespace)

    out = capsys.readouterr().out
    assert re.search(r"\d+ tokens, L1 0\.\d{4}, epsilon bin used 0\.050", out)  # the first encode's line
    assert (tmp_path / "tokens.pt").is_file()
    assert namespace["decoded"].shape == (1, 3, 64, 64)


def test_readme_encode_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's five-line example imports only the package and prints the demo model's token count."""
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"<!-- example: encode -->\s*```python\n(.*?)```", text, re.S)
    assert block, "the encode example is missing from README.md"
    assert "engine" not in block.group(1)  # a user's first lines import the model package alone
    shutil.copytree(REPO_ROOT / "assets", tmp_path / "assets")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(block.group(1), "README.md encode example", "exec"), namespace)
    tokens = int(re.fullmatch(r"(\d+) tokens at epsilon 0\.05\n", capsys.readouterr().out).group(1))
    assert 1 <= tokens <= namespace["tokenizer"].ltc_budget
    assert namespace["reconstruction"].shape == namespace["image"].shape == (1, 3, 64, 64)
