"""Evaluate a KARL checkpoint (the same as the `karl-evaluate` command); see `--help` and docs/EVALUATION.md."""
import sys

from evaluation.main import main

if __name__ == "__main__":
    sys.exit(main())
