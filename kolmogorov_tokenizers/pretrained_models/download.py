"""Download the released KARL checkpoints, verified and resumable.

    python kolmogorov_tokenizers/pretrained_models/download.py [--model NAME|all]
        [--dataset imagenet|imagenet100|all] [--output_dir DIR] [--overwrite] [--url URL] [--list]

Five checkpoints are released (official README, "Pretrained Checkpoints"), all `karl_small`:
ImageNet-1K: vqgan_quantized; ImageNet100: vqgan_quantized, vqgan_continuous, vae_quantized,
vae_continuous. They land where the official README puts them:
`kolmogorov_tokenizers/pretrained_models/<dataset>/karl_small_<base>_<quantized|continuous>_latents.pth`.
No checksum is published: the SHA-256 of each download is computed and written to `<file>.sha256`.
Set KARL_DOWNLOAD_MIRROR=<base URL> to fetch `<base URL>/<dataset>/<file>` from a mirror instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

from modules.io.download import RemoteFile, download_release_files, dropbox_direct_url, \
    run_download_command

PRETRAINED_DIR = Path(__file__).resolve().parent
DATASETS = ("imagenet", "imagenet100")
MODELS = (
    "karl_small_vqgan_quantized_latents",
    "karl_small_vqgan_continuous_latents",
    "karl_small_vae_quantized_latents",
    "karl_small_vae_continuous_latents",
)
_SOURCE = "https://github.com/ShivamDuggal4/karl (README, Pretrained Checkpoints)"


def _release(dataset: str, model: str, dropbox_link: str) -> RemoteFile:
    return RemoteFile(relpath=f"{dataset}/{model}.pth", url=dropbox_direct_url(dropbox_link), source=_SOURCE)


# (dataset, model) -> file. Links from the official README (Dropbox share links, dl=0 turned into dl=1).
RELEASED_CHECKPOINTS: dict[tuple[str, str], RemoteFile] = {
    ("imagenet", "karl_small_vqgan_quantized_latents"): _release(
        "imagenet", "karl_small_vqgan_quantized_latents",
        "https://www.dropbox.com/scl/fi/4a2zwpceavl92ij56ja3m/karl_small_vqgan_quantized_latents.pth"
        "?rlkey=lc49wt2igsdhzfrqwvl62q30z&st=j3f9up9q&dl=0"),
    ("imagenet100", "karl_small_vqgan_quantized_latents"): _release(
        "imagenet100", "karl_small_vqgan_quantized_latents",
        "https://www.dropbox.com/scl/fi/60plmx9s1jsu5axqb1frj/karl_small_vqgan_quantized_latents.pth"
        "?rlkey=v0y3fsureyfijy5m28ba4vpl7&st=haisv8qx&dl=0"),
    ("imagenet100", "karl_small_vqgan_continuous_latents"): _release(
        "imagenet100", "karl_small_vqgan_continuous_latents",
        "https://www.dropbox.com/scl/fi/ipvxil7ubb41wxs25du5p/karl_small_vqgan_continuous_latents.pth"
        "?rlkey=opmua15uarn2yt60yo9j7v5uo&st=bii053ux&dl=0"),
    ("imagenet100", "karl_small_vae_quantized_latents"): _release(
        "imagenet100", "karl_small_vae_quantized_latents",
        "https://www.dropbox.com/scl/fi/gynbn6onb5tm1t8pmca0x/karl_small_vae_quantized_latents.pth"
        "?rlkey=93nz1j334ex57myea0qdxu7y5&st=9hjwvyc2&dl=0"),
    ("imagenet100", "karl_small_vae_continuous_latents"): _release(
        "imagenet100", "karl_small_vae_continuous_latents",
        "https://www.dropbox.com/scl/fi/v5t6trgczpaprvoow58zk/karl_small_vae_continuous_latents.pth"
        "?rlkey=0tldlcy8ir0lrectdk1o42tch&st=qzfw7g1h&dl=0"),
}


def normalize_model_name(name: str) -> str:
    """Accept the file name with or without `_latents` / `.pth` ("karl_small_vae_continuous")."""
    stem = name[:-4] if name.endswith(".pth") else name
    if stem in MODELS:
        return stem
    if f"{stem}_latents" in MODELS:
        return f"{stem}_latents"
    raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODELS)} or all")


def checkpoint_path(model: str, dataset: str = "imagenet100", output_dir: Optional[str | Path] = None) -> Path:
    """Where a released checkpoint is stored (whether or not it has been downloaded)."""
    model = normalize_model_name(model)
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    if (dataset, model) not in RELEASED_CHECKPOINTS:
        raise ValueError(f"no released checkpoint {model} for {dataset}; released: {_released_list()}")
    return Path(output_dir or PRETRAINED_DIR) / RELEASED_CHECKPOINTS[(dataset, model)].relpath


def select_checkpoints(model: str = "all", dataset: str = "all") -> list[RemoteFile]:
    """The released files matching --model and --dataset ("all" matches everything)."""
    if dataset not in (*DATASETS, "all"):
        raise ValueError(f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}, all")
    models: Iterable[str] = MODELS if model == "all" else (normalize_model_name(model),)
    datasets = DATASETS if dataset == "all" else (dataset,)
    files = [RELEASED_CHECKPOINTS[(d, m)] for d in datasets for m in models if (d, m) in RELEASED_CHECKPOINTS]
    if not files:
        raise ValueError(f"no released checkpoint matches --model {model} --dataset {dataset}; "
                         f"released: {_released_list()}")
    return files


def _released_list() -> str:
    return ", ".join(f"{d}/{m}" for d, m in RELEASED_CHECKPOINTS)


def download_checkpoints(model: str = "all", dataset: str = "all", output_dir: Optional[str | Path] = None,
                         overwrite: bool = False, url: Optional[str] = None, **kwargs) -> list[Path]:
    """Download the selected released checkpoints; returns their paths."""
    files = select_checkpoints(model, dataset)
    return download_release_files(files, output_dir or PRETRAINED_DIR, overwrite=overwrite, url=url, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Download the released KARL checkpoints.")
    parser.add_argument("--model", default="all",
                        help=f"one of {', '.join(MODELS)} (the _latents suffix is optional), or all (default)")
    parser.add_argument("--dataset", default="all", choices=(*DATASETS, "all"),
                        help="training set of the checkpoint (default: all)")
    parser.add_argument("--output_dir", default=str(PRETRAINED_DIR),
                        help="destination folder; files go to <output_dir>/<dataset>/<name>.pth "
                             "(default: kolmogorov_tokenizers/pretrained_models)")
    parser.add_argument("--overwrite", action="store_true", help="download again even if the file exists")
    parser.add_argument("--url", default=None, help="download from this URL instead (exactly one file)")
    parser.add_argument("--list", action="store_true", help="print the released files and links, download nothing")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def action() -> None:
        if args.list:
            for remote in select_checkpoints(args.model, args.dataset):
                print(f"{remote.relpath:50s} {remote.url}")
            return
        download_checkpoints(args.model, args.dataset, args.output_dir, overwrite=args.overwrite, url=args.url)

    return run_download_command(action)


if __name__ == "__main__":
    sys.exit(main())
