"""The shipped demo model: `load_tokenizer("demo")` -> the files in pretrained_models/demo/.

The folder holds `karl_demo.safetensors` (EMA weights of KARL and of its stage-0 base tokenizer) with its
config `karl_demo.safetensors.json`, and `SHA256SUMS` (sha256sum format). Both files are checked against
SHA256SUMS before anything is read, so a truncated or edited copy is refused with a message instead of
loading silently wrong weights. `export_demo_model` writes such a folder from a training checkpoint
(run_scripts/quickstart.sh, profile full).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, Union

from modules.io import CheckpointError, atomic_write_text

DEMO_DIR = Path(__file__).parent / "pretrained_models" / "demo"
WEIGHTS_NAME = "karl_demo.safetensors"
CONFIG_NAME = WEIGHTS_NAME + ".json"  # the name export_safetensors gives the config
SUMS_NAME = "SHA256SUMS"
QUICKSTART_FULL = "QUICKSTART_PROFILE=full bash run_scripts/quickstart.sh"


class DemoModelMissing(FileNotFoundError):
    """The demo model files are not there (not shipped in this copy, or deleted)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_sums(sums_path: Path) -> Dict[str, str]:
    """SHA256SUMS ("<hex>  <name>" lines) -> {name: hex}."""
    sums: Dict[str, str] = {}
    for number, line in enumerate(sums_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise CheckpointError(f"{sums_path}:{number}: expected '<sha256>  <file name>', got {line!r}")
        sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def demo_model_path(folder: Union[str, Path, None] = None) -> Path:
    """Path of the verified demo weights (`karl_demo.safetensors`; its config lies next to it).

    Raises DemoModelMissing (a FileNotFoundError) when a file is missing, CheckpointError (a ValueError) when
    a file's SHA-256 differs from SHA256SUMS.
    """
    folder = DEMO_DIR if folder is None else Path(folder)
    sums_path = folder / SUMS_NAME
    missing = [p for p in (folder / WEIGHTS_NAME, folder / CONFIG_NAME, sums_path) if not p.is_file()]
    if missing:
        raise DemoModelMissing(
            f"the demo model is not available: missing {', '.join(str(p) for p in missing)}. "
            f"Train it with `{QUICKSTART_FULL}` (see {folder / 'README.md'}) or pass a checkpoint path")
    sums = read_sums(sums_path)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if name not in sums:
            raise CheckpointError(f"{sums_path} has no SHA-256 for {name}")
        actual = sha256_of(folder / name)
        if actual != sums[name]:
            raise CheckpointError(
                f"demo model file {folder / name} is corrupted or was modified: SHA-256 {actual} does not match "
                f"{sums[name]} in {sums_path}. Restore it (git checkout -- {folder}) or retrain with "
                f"`{QUICKSTART_FULL}`")
    return folder / WEIGHTS_NAME


def export_demo_model(checkpoint: Union[str, Path], folder: Union[str, Path]) -> Path:
    """Training checkpoint (EMA weights preferred) -> folder/karl_demo.safetensors + .json + SHA256SUMS."""
    from kolmogorov_tokenizers.checkpoint import export_safetensors, load_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = load_tokenizer(checkpoint)
    weights = export_safetensors(model, folder / WEIGHTS_NAME)
    lines = [f"{sha256_of(folder / name)}  {name}" for name in (WEIGHTS_NAME, CONFIG_NAME)]
    atomic_write_text(folder / SUMS_NAME, "\n".join(lines) + "\n")
    return weights
