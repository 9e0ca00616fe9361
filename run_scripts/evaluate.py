"""Evaluate a KARL checkpoint; see `--help` and docs (README, "Evaluation")."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout too

from engine.evaluation.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
