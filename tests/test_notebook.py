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
from test_demo_model import NOT_SHIPPED, SHIPPED

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


def test_notebook_runs_on_cpu_with_a_given_checkpoint(tmp_path, monkeypatch, kernel_of_this_python):
    checkpoint = make_tiny_checkpoint(tmp_path / "tiny.pth")
    monkeypatch.setenv("KARL_NOTEBOOK_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the CPU path, as on a laptop
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name=kernel_of_this_python,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError (with the cell's traceback) if any cell fails

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "karl_demo on vqgan_demo, 64 px" in text  # the checkpoint from the variable was loaded
    for name in ("flat", "noise", "astronaut", "coffee"):
        assert name in text  # the token table lists demo-data images and photographs
    figures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(figures) == 2  # reconstructions grid + tokens-vs-PNG-size plot


@pytest.mark.skipif(not all(p.is_file() for p in SHIPPED), reason=NOT_SHIPPED)
def test_notebook_runs_with_the_shipped_demo_model(tmp_path, monkeypatch, kernel_of_this_python):
    monkeypatch.delenv("KARL_NOTEBOOK_CHECKPOINT", raising=False)  # the notebook's default: "demo"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name=kernel_of_this_python,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")
    assert "karl_demo on patch_vae_demo, 64 px" in text, text
