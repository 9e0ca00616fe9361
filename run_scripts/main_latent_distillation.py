"""Stage 1 (latent-distillation pretraining) with the official flags: see engine/main_train.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

from engine.main_train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(stage="latent_distillation"))
