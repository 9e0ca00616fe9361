"""Create ImageNet-100 (the CMC class list, as used by the KARL release) from a full ImageNet tree.

    python run_scripts/create_imagenet100.py --imagenet_dir /data/imagenet --imagenet100_dir /data/imagenet100 [--copy]

SRC must hold train/<wnid>/ and val/<wnid>/ (val sorted into class folders). Symlinks by default (one per
class folder); --copy copies the files. Reruns keep what is already correct. Exit 1 on any problem.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.data.errors import DataError
from engine.data.imagenet100 import create_imagenet100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imagenet_dir", required=True, type=Path, help="full ImageNet: train/ and val/ by wnid")
    parser.add_argument("--imagenet100_dir", required=True, type=Path, help="destination folder")
    parser.add_argument("--copy", action="store_true", help="copy the images instead of symlinking class folders")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        reports = create_imagenet100(args.imagenet_dir, args.imagenet100_dir, copy=args.copy)
    except (DataError, OSError) as err:
        print(f"create_imagenet100: error: {err}", file=sys.stderr)
        return 1
    mode = "copied files" if args.copy else "symlinked class folders"
    for r in reports:
        print(f"{r.split}: {r.num_classes} classes, {r.num_images} images ({mode}: {r.created} new, "
              f"{r.kept} already in place)")
        if r.replaced:
            print(f"{r.split}: re-pointed {len(r.replaced)} stale symlink(s): {' '.join(r.replaced)}")
    print(f"ImageNet-100 ready at {args.imagenet100_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
