"""Generate the embedded demo dataset (procedural images of known complexity + photo crops).

    python run_scripts/prepare_demo_data.py --output_dir datasets/demo [--resolution 64] [--seed 0]
        [--num_train 4000] [--num_val 400] [--no_system_photos] [--overwrite]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.data.errors import DataError
from engine.demo_data import DemoDataConfig, generate_demo_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = DemoDataConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, type=Path, help="folder to create (train/, val/, metadata.csv)")
    parser.add_argument("--resolution", type=int, default=defaults.resolution, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--num_train", type=int, default=defaults.num_train)
    parser.add_argument("--num_val", type=int, default=defaults.num_val)
    parser.add_argument("--no_system_photos", action="store_true",
                        help="ignore wallpapers under /usr/share/{backgrounds,wallpapers} (train is then "
                             "the same on every machine)")
    parser.add_argument("--overwrite", action="store_true", help="replace a demo dataset made with other settings")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = DemoDataConfig(resolution=args.resolution, num_train=args.num_train, num_val=args.num_val,
                            seed=args.seed, use_system_photos=not args.no_system_photos)
    try:
        summary = generate_demo_dataset(args.output_dir, config, overwrite=args.overwrite)
    except DataError as err:
        print(f"prepare_demo_data: error: {err}", file=sys.stderr)
        return 1
    if summary["skipped"]:
        print(f"{summary['output_dir']}: demo data already present with these settings "
              f"({summary['num_images']} images); nothing to do")
        return 0
    print(f"wrote {summary['num_train']} train + {summary['num_val']} val images at {args.resolution} px "
          f"to {summary['output_dir']} in {summary['seconds']:.1f} s")
    for split, counts in summary["families"].items():
        print(f"{split}: " + ", ".join(f"{family} {n}" for family, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
