"""Stage 2 (full finetuning) with the official flags: see engine/main_train.py."""
import sys

from engine.main_train import main

if __name__ == "__main__":
    sys.exit(main(stage="full_finetuning"))
