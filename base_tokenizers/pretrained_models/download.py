"""Download the pretrained base tokenizers KARL sits on, verified and resumable.

    python base_tokenizers/pretrained_models/download.py [--model vqgan|vae|all] [--output_dir DIR]
                                                         [--overwrite] [--url URL] [--list]

Files land in this folder by default: `vqgan.ckpt` (MAGE's ImageNet VQGAN, published on Google Drive as
`vqgan_jax_strongaug.ckpt`) and `vae.ckpt` (MAR's ImageNet KL-16 VAE, published on Dropbox as
`kl16.ckpt`). Neither project publishes a checksum, so the SHA-256 of each download is computed and
written next to it as `<file>.sha256`. Set KARL_DOWNLOAD_MIRROR=<base URL> to fetch `<base URL>/vqgan.ckpt`
etc. from a mirror instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from modules.io.download import RemoteFile, download_release_files, dropbox_direct_url, \
    google_drive_url, run_download_command

PRETRAINED_DIR = Path(__file__).resolve().parent

# Facts from the publishing READMEs (links only; no checksums or sizes are published).
BASE_TOKENIZER_FILES: dict[str, RemoteFile] = {
    "vqgan": RemoteFile(
        relpath="vqgan.ckpt",
        url=google_drive_url("13S_unB87n6KKuuMdyMnyExW0G1kplTbP"),
        source="https://github.com/LTH14/mage (README: pre-trained VQGAN tokenizer, Google Drive)",
        note="MAGE ImageNet VQGAN, f16, 1024 codes x 256 (vqgan_jax_strongaug.ckpt)",
    ),
    "vae": RemoteFile(
        relpath="vae.ckpt",
        url=dropbox_direct_url("https://www.dropbox.com/scl/fi/hhmuvaiacrarfg28qxhwz/kl16.ckpt"
                               "?rlkey=l44xipsezc8atcffdp4q7mwmh&dl=0"),
        source="https://github.com/LTH14/mar (README / util/download.py: KL-16 VAE, Dropbox)",
        note="MAR ImageNet KL-16 VAE, 16 latent channels (kl16.ckpt)",
    ),
}
MODEL_CHOICES = (*BASE_TOKENIZER_FILES, "all")


def base_tokenizer_path(name: str, output_dir: Optional[str | Path] = None) -> Path:
    """Where the checkpoint of base tokenizer `name` ("vqgan" | "vae") is stored."""
    if name not in BASE_TOKENIZER_FILES:
        raise ValueError(f"unknown base tokenizer {name!r}; allowed: {', '.join(BASE_TOKENIZER_FILES)}")
    return Path(output_dir or PRETRAINED_DIR) / BASE_TOKENIZER_FILES[name].relpath


def download_base_tokenizers(model: str = "all", output_dir: Optional[str | Path] = None,
                             overwrite: bool = False, url: Optional[str] = None, **kwargs) -> list[Path]:
    """Download one base tokenizer ("vqgan" | "vae") or "all"; returns the file paths."""
    if model not in MODEL_CHOICES:
        raise ValueError(f"unknown --model {model!r}; allowed: {', '.join(MODEL_CHOICES)}")
    names = list(BASE_TOKENIZER_FILES) if model == "all" else [model]
    files = [BASE_TOKENIZER_FILES[n] for n in names]
    return download_release_files(files, output_dir or PRETRAINED_DIR, overwrite=overwrite, url=url, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Download the pretrained base tokenizers (VQGAN, KL-16 VAE).")
    parser.add_argument("--model", default="all", choices=MODEL_CHOICES, help="which base tokenizer (default: all)")
    parser.add_argument("--output_dir", default=str(PRETRAINED_DIR),
                        help="destination folder (default: base_tokenizers/pretrained_models)")
    parser.add_argument("--overwrite", action="store_true", help="download again even if the file exists")
    parser.add_argument("--url", default=None, help="download from this URL instead (one --model only)")
    parser.add_argument("--list", action="store_true", help="print the known files and links, download nothing")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for name, remote in BASE_TOKENIZER_FILES.items():
            print(f"{name:6s} {remote.relpath:12s} {remote.url}\n       source: {remote.source}")
        return 0
    return run_download_command(
        lambda: download_base_tokenizers(args.model, args.output_dir, overwrite=args.overwrite, url=args.url))


if __name__ == "__main__":
    sys.exit(main())
