"""Which of this project's files does a reader have to open to follow a user path? Measured, not guessed.

    python -m research.code_paths            # the encode path and one stage-1 training step

Runs the path under `sys.setprofile` and lists every project file in which a function was entered, with its
line count. Package `__init__.py` files that only re-export names are listed apart (a reader skips them).
The encode path: `model.encode(image, desired_reconstruction_quality=0.05)`; loading (`load_tokenizer("demo")`,
`load_image(path)`) is listed apart.
The training step: one `Trainer.train_step(images)` of the latent-distillation stage on the demo-sized KARL
(forward, backward, optimizer step, EMA).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List

REPO = Path(__file__).resolve().parents[1]
SKIP = ("tests", "research", "benchmarks", ".venv")


@contextmanager
def project_files_entered() -> Iterator[Dict[str, int]]:
    """Collects {repo-relative path: calls} of the project's files whose functions run inside the block."""
    seen: Dict[str, int] = {}

    def profile(frame, event, arg):
        if event != "call":
            return
        path = Path(frame.f_code.co_filename)
        try:
            rel = path.relative_to(REPO)
        except ValueError:
            return
        if rel.parts and rel.parts[0] not in SKIP:
            seen[str(rel)] = seen.get(str(rel), 0) + 1

    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(None)


def is_reexport(path: Path) -> bool:
    return path.name == "__init__.py" and "def " not in path.read_text().replace("def __getattr__", "") \
        .replace("def __dir__", "")


def summarise(title: str, seen: Dict[str, int]) -> Dict[str, object]:
    files = sorted(seen)
    code = [f for f in files if not is_reexport(REPO / f)]
    lines = {f: len((REPO / f).read_text().splitlines()) for f in code}
    print(f"{title}: {len(code)} files, {sum(lines.values())} lines (re-export __init__ files left out: "
          f"{len(files) - len(code)})")
    for f in code:
        print(f"  {lines[f]:5d}  {f}")
    return {"files": code, "lines": lines}


def measure_encode(workdir: Path) -> Dict[str, Dict[str, object]]:
    """Two paths: loading (`load_tokenizer("demo")`, `load_image`) and the encode call itself."""
    from PIL import Image

    from kolmogorov_tokenizers import load_image, load_tokenizer

    image_path = workdir / "image.png"
    Image.new("RGB", (64, 64), (120, 30, 200)).save(image_path)
    load_tokenizer("demo").encode(load_image(image_path, 64))  # warm-up: first-time imports are not the path
    with project_files_entered() as loading:
        model, image = load_tokenizer("demo"), load_image(image_path, 64)
    with project_files_entered() as encoding:
        model.encode(image, desired_reconstruction_quality=0.05)
    return {"load": summarise("loading (load_tokenizer + load_image)", loading),
            "encode": summarise("encode (model.encode)", encoding)}


def measure_training_step(workdir: Path) -> Dict[str, object]:
    """One latent-distillation step on a tiny KARL: build the trainer, then trace train_step + optimizer step."""
    from engine.config import load_config
    from engine.stages import get_stage
    from engine.trainer import Trainer
    from engine.demo_data import DemoDataConfig, generate_demo_dataset

    data = workdir / "demo"
    generate_demo_dataset(data, DemoDataConfig(resolution=32, num_train=8, num_val=4, seed=0, use_system_photos=False))
    argv = ["--stage", "latent_distillation", "--data_path", str(data), "--output_dir", str(workdir / "out"),
            "--batch_size", "4", "--epochs", "1", "--warmup_epochs", "0", "--device", "cpu", "--precision", "fp32",
            "data.num_workers=0", "data.input_size=32", "model.model=karl_demo", "model.base_tokenizer=vqgan_demo",
            "model.base_overrides.resolution=32", "model.overrides.bank_size=32"]
    trainer = Trainer(load_config(argv), get_stage("latent_distillation"))
    batch = next(iter(trainer._loader()))
    images = batch[0] if isinstance(batch, (list, tuple)) else batch
    trainer.model.train()
    trainer.train_step(images, ("model",))  # warm-up
    with project_files_entered() as seen:
        trainer.train_step(images, ("model",))
    trainer.release_output_dir()
    return summarise("one stage-1 training step", seen)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", nargs="+", default=["encode", "train"], choices=["encode", "train"])
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        if "encode" in args.paths:
            measure_encode(Path(tmp))
        if "train" in args.paths:
            measure_training_step(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
