"""kolmogorov_tokenizer_demo.ipynb runs top to bottom on a CPU (tiny random checkpoint via
KARL_NOTEBOOK_CHECKPOINT) and is committed with its outputs cleared."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from test_cli import make_tiny_checkpoint
from test_demo_model import shipped

NOTEBOOK = Path(__file__).resolve().parents[1] / "kolmogorov_tokenizer_demo.ipynb"
KERNEL_NAME = "karl-test-python"


@pytest.fixture
def kernel_of_this_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec running THIS interpreter (the venv's), whatever kernels the machine has installed."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "KARL test kernel", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL_NAME


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells
    assert all(c.outputs == [] and c.execution_count is None for c in code_cells)


def _execute_on_cpu(tmp_path: Path, kernel_name: str, monkeypatch: pytest.MonkeyPatch) -> list:
    """Runs the notebook top to bottom on the CPU path (as on a laptop); returns every code cell's outputs.
    Raises CellExecutionError (with the cell's traceback) if any cell fails."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name=kernel_name, resources={"metadata": {"path": str(tmp_path)}}).execute()
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _stream_text(outputs: list) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def test_notebook_runs_on_cpu_with_a_given_checkpoint(tmp_path, monkeypatch, kernel_of_this_python):
    checkpoint = make_tiny_checkpoint(tmp_path / "tiny.pth")
    monkeypatch.setenv("KARL_NOTEBOOK_CHECKPOINT", str(checkpoint))
    outputs = _execute_on_cpu(tmp_path, kernel_of_this_python, monkeypatch)
    text = _stream_text(outputs)
    assert "karl_demo on vqgan_demo, 64 px" in text  # the checkpoint from the variable was loaded
    for name in ("flat", "noise", "astronaut", "coffee"):
        assert name in text  # the token table lists demo-data images and photographs
    figures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(figures) == 2  # reconstructions grid + tokens-vs-PNG-size plot


@shipped
def test_notebook_runs_with_the_shipped_demo_model(tmp_path, monkeypatch, kernel_of_this_python):
    monkeypatch.delenv("KARL_NOTEBOOK_CHECKPOINT", raising=False)  # the notebook's default: "demo"
    text = _stream_text(_execute_on_cpu(tmp_path, kernel_of_this_python, monkeypatch))
    assert "karl_demo on patch_vae_demo, 64 px" in text, text
