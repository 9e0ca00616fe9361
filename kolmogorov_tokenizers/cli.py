"""Command-line tool: `python -m kolmogorov_tokenizers {encode,decode,analyze}` (also the `karl` script).

    encode IMAGE...   -> a table of token count, L1 and PSNR per image; `<stem>_recon.png` and
                         `<stem>_tokens.pt` (tokens, mask, indices, model fingerprint, epsilon) per image
    decode TOKENS...  -> `<stem>_decoded.png`, refusing tokens made by another model
    analyze FOLDER    -> a CSV of complexity estimates (tokens and L1 per epsilon, PNG bytes) + a summary

This is an entry point, so it may import `engine.data` (custom-image preprocessing). User errors (bad
paths, bad values, wrong checkpoint) print ONE line `karl: error: ...` on stderr and exit non-zero; set
KARL_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from kolmogorov_tokenizers.checkpoint import TRAINING_STATE_PREFIXES, load_tokenizer
from kolmogorov_tokenizers.config import EPSILON_BINS
from kolmogorov_tokenizers.karl import KARLTokenizer
from kolmogorov_tokenizers.metrics import l1_per_image, mse_per_image, psnr_from_mse, spearman
from kolmogorov_tokenizers.image_io import DataError, is_image_file, load_image
from modules.device import resolve_device  # DeviceError is a ValueError: main prints it on one line
from modules.io import CheckpointError, atomic_save, atomic_write_bytes, safe_torch_load

PROG = "karl"
TOKENS_FORMAT = "karl-tokens"  # tag of the tokens files written by `encode`
TOKENS_FORMAT_VERSION = 1
TOKENS_KEYS = ("tokens", "mask", "indices", "num_tokens", "budget", "epsilon", "epsilon_bin", "model_fingerprint",
               "model_name", "checkpoint", "input_size", "source_image")
MAX_EPSILON = EPSILON_BINS[-1]  # METHOD.md s.3: the largest condition bin (0.38)
DEFAULT_EPSILONS = (0.03, 0.05, 0.09)  # METHOD.md s.5: the variable-token evaluation's epsilons
QUICKSTART = "bash run_scripts/quickstart.sh"


class CLIError(Exception):
    """A problem the user can fix; printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage + error: we want one line
        raise CLIError(f"{message} (see `{self.prog} --help`)")


# --- argument values ------------------------------------------------------------------------------------

def epsilon_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"epsilon must be a number in [0, {MAX_EPSILON}], got {text!r}") from None
    if not 0.0 <= value <= MAX_EPSILON:  # also rejects nan
        raise argparse.ArgumentTypeError(f"epsilon must be in [0, {MAX_EPSILON}] (mean L1 error of [0, 1] "
                                         f"pixels; 0 = adaptivity off), got {text}")
    return value


class ListOption(argparse.Action):
    """A list option that takes its values space- or comma-separated, or both: `--epsilons 0.03 0.05` and
    `--epsilons 0.03,0.05` mean the same in `karl` and in run_scripts/evaluate.py. `type` parses ONE item."""

    def __init__(self, option_strings, dest, type=str, **kwargs):  # noqa: A002 (argparse's name)
        self.item_type = type
        super().__init__(option_strings, dest, nargs="+", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        items = [part.strip() for value in values for part in str(value).split(",") if part.strip()]
        if not items:
            parser.error(f"{option_string} expects values, space- or comma-separated")
        parsed = []
        for item in items:
            try:
                parsed.append(self.item_type(item))
            except (argparse.ArgumentTypeError, ValueError) as err:
                hint = ""
                if parsed:  # a list option takes every value up to the next option, a positional argument too
                    hint = (f" (if {item!r} is a positional argument, give it before {option_string}, or end the "
                            f"list with --)")
                parser.error(f"argument {option_string}: {err}{hint}")
        setattr(namespace, self.dest, list(dict.fromkeys(parsed)))  # drop repeats, keep order


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option (e.g. --ckpt for --checkpoint): still works, says which one to use."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# --- model -------------------------------------------------------------------------------------------------

def load_model(checkpoint: str, device: torch.device, input_size: Optional[int] = None) -> KARLTokenizer:
    """`checkpoint` = a file path or "demo" (the shipped demo model)."""
    overrides = {} if input_size is None else {"input_size": input_size}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "ignored unknown keys": not the CLI user's business
            model = load_tokenizer(checkpoint, device=device, **overrides)
    except FileNotFoundError as err:
        if checkpoint == "demo":
            raise CLIError(f"the demo model is not available yet; create it with `{QUICKSTART}` "
                           f"or pass --checkpoint PATH") from err
        raise CLIError(f"checkpoint not found: {checkpoint}") from err
    except ValueError as err:
        if input_size is not None and not isinstance(err, CheckpointError):
            raise CLIError(f"--input_size {input_size} does not suit this model: {err}") from err
        raise
    except Exception as err:
        # a damaged .safetensors raises the safetensors library's own error (not a ValueError), a
        # sidecar .json without its model_config a KeyError: the user's file, not a bug; one line naming it
        if not (type(err).__module__.startswith("safetensors") or isinstance(err, KeyError)):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CLIError(f"cannot load checkpoint {checkpoint}: not a valid checkpoint file ({type(err).__name__}: "
                       f"{first})") from None
    return model


def model_fingerprint(model: KARLTokenizer) -> str:
    """SHA-256 (16 hex digits) of the model's weights: the same for a .pth and its safetensors export."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not isinstance(tensor, torch.Tensor) or name.startswith(TRAINING_STATE_PREFIXES):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def check_budget(budget: Optional[int], model: KARLTokenizer) -> int:
    if budget is None:
        return model.ltc_budget
    if not 1 <= budget <= model.config.bank_size:
        raise CLIError(f"--budget must be in [1, {model.config.bank_size}] for this model (its token bank), "
                       f"got {budget}")
    return budget


# --- images ------------------------------------------------------------------------------------------------

def load_images(paths: Sequence[Path], input_size: int) -> torch.Tensor:
    """-> (B, 3, S, S) in [0, 1]: Resize(S, bicubic, antialias) + CenterCrop(S), the custom-image transform."""
    return torch.cat([load_image(p, input_size) for p in paths])


def save_png(image01: torch.Tensor, path: Path) -> None:
    """image01: (3, H, W) in [0, 1] -> 8-bit RGB PNG."""
    from PIL import Image

    array = (image01.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    # encoded in memory, then written atomically: a full disk or a kill never leaves a 0-byte / truncated
    # PNG under the final name, and the write error (ENOSPC) reaches atomic_write, which names the disk
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def png_bytes(image01: torch.Tensor) -> int:
    """Size of the 8-bit PNG of `image01` (3, H, W): a classic (upper-bound) complexity estimate."""
    from PIL import Image

    array = (image01.float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return buffer.getbuffer().nbytes


def unique_stems(paths: Sequence[Path]) -> List[str]:
    """One output stem per distinct input path, never shared: `photo` for the first photo.png, `photo_1`
    for a photo.png in another folder, and a `photo_1.png` given as well gets the next free name
    (compared case-insensitively, as on macOS and Windows file systems). The same path twice gets the
    same stem."""
    stems, taken, by_path = [], set(), {}
    for p in paths:
        key = os.path.abspath(p)
        if key not in by_path:
            stem, n = p.stem, 0
            while stem.lower() in taken:
                n += 1
                stem = f"{p.stem}_{n}"
            taken.add(stem.lower())
            by_path[key] = stem
        stems.append(by_path[key])
    return stems


def make_dir(path: Path, option: str) -> Path:
    """Create an output folder up front, so a bad path fails before any computation."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CLIError(f"cannot create {option} folder {path}: {err.strerror}") from None
    return path


def batches(n: int, size: int) -> List[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


# --- subcommands -------------------------------------------------------------------------------------------

@dataclass
class EncodedImage:
    path: Path
    num_tokens: int
    budget: int
    l1: float
    psnr: float
    recon_path: Path
    tokens_path: Path


def encode_at(model: KARLTokenizer, x: torch.Tensor, budget: int, epsilon: float):
    """One pass at `epsilon`. Epsilon 0 means one thing in this tool: adaptivity off, every token of the budget
    is kept (the model's `adaptive=False`, as the evaluation's fixed allocation). The model API's own
    desired_reconstruction_quality=0 only conditions on the smallest bin (0.005), as the release does, and
    its halting head may still drop tokens (18 of 64 on a flat image with the demo model)."""
    return model.encode(x, input_token_budget=budget, desired_reconstruction_quality=epsilon, adaptive=epsilon > 0)


def run_encode(args: argparse.Namespace) -> List[EncodedImage]:
    paths = [Path(p) for p in args.images]
    model = load_model(args.checkpoint, resolve_device(args.device), args.input_size)
    budget = check_budget(args.budget, model)
    images = load_images(paths, model.config.input_size)  # every path is checked before any work
    out_dir = make_dir(Path(args.output_dir), "--output_dir")
    identity = dict(model_fingerprint=model_fingerprint(model), model_name=model.config.model_name,
                    checkpoint=str(args.checkpoint), input_size=model.config.input_size)
    device = next(model.parameters()).device
    stems, results = unique_stems(paths), []
    for sl in batches(len(paths), args.batch_size):
        x = images[sl].to(device)
        _, recon, info = encode_at(model, x, budget, args.epsilon)
        l1, psnr = l1_per_image(recon, x), psnr_from_mse(mse_per_image(recon, x))  # (B,) each
        for i, b in enumerate(range(sl.start, sl.stop)):
            recon_path = out_dir / f"{stems[b]}_recon.png"
            tokens_path = out_dir / f"{stems[b]}_tokens.pt"
            save_png(recon[i], recon_path)
            record = dict(
                format=TOKENS_FORMAT, version=TOKENS_FORMAT_VERSION, **identity,
                tokens=info["tokens"][i].cpu(),  # (T, D)
                mask=info["mask"][i].cpu(),  # (T,) bool, True = active
                indices=None if info["indices"] is None else info["indices"][i].cpu(),  # (T,) or None
                num_tokens=int(info["num_tokens"][i]), budget=budget, epsilon=float(args.epsilon),
                epsilon_bin=float(info["epsilon"][i]), source_image=str(paths[b]),
            )
            atomic_save(record, tokens_path)
            results.append(EncodedImage(paths[b], record["num_tokens"], budget, float(l1[i]), float(psnr[i]),
                                        recon_path, tokens_path))
    print(f"model {model.config.model_name} ({identity['model_fingerprint']}), epsilon {args.epsilon}, "
          f"budget {budget}")
    print_table(["image", "tokens", "L1", "PSNR (dB)", "reconstruction"],
                [[str(r.path), f"{r.num_tokens}/{r.budget}", f"{r.l1:.4f}", f"{r.psnr:.2f}", str(r.recon_path)]
                 for r in results])
    if args.epsilon > 0:
        # The halting head predicts how many tokens reach epsilon; it can be wrong (an image unlike the
        # training data, a budget too small for it). Say so per image instead of letting a miss pass silently.
        missed = [r for r in results if r.l1 > args.epsilon]
        for r in missed:
            hint = ("every token of the budget was used: a larger --budget may reach it" if r.num_tokens == r.budget
                    else "the halting head stopped early: this model mispredicts such images")
            print(f"warning: {r.path}: L1 {r.l1:.4f} misses epsilon {args.epsilon:g} with {r.num_tokens} of "
                  f"{r.budget} tokens ({hint})", file=sys.stderr)
        print(f"{len(results) - len(missed)} of {len(results)} images reached epsilon {args.epsilon:g} "
              f"(L1 <= epsilon); {len(missed)} missed it")
    else:
        print(f"epsilon 0: adaptivity off, every one of the {budget} tokens kept")
    print(f"tokens saved next to the reconstructions in {out_dir}")
    return results


def read_tokens(path: Path) -> Dict:
    if not path.is_file():
        raise CLIError(f"tokens file not found: {path}")
    record = safe_torch_load(path, map_location="cpu")
    if not isinstance(record, dict) or record.get("format") != TOKENS_FORMAT:
        raise CLIError(f"{path} is not a tokens file written by `{PROG} encode`")
    if record.get("version") != TOKENS_FORMAT_VERSION:
        raise CLIError(f"{path} has tokens format version {record.get('version')}; this tool reads version "
                       f"{TOKENS_FORMAT_VERSION}")
    missing = sorted(set(TOKENS_KEYS) - set(record))
    tokens, mask = record.get("tokens"), record.get("mask")
    if missing or not (isinstance(tokens, torch.Tensor) and tokens.dim() == 2 and tokens.is_floating_point()
                       and isinstance(mask, torch.Tensor) and mask.dtype == torch.bool
                       and mask.shape == tokens.shape[:1]):
        raise CLIError(f"{path} is a damaged tokens file (missing {missing} or wrong tokens/mask tensors)")
    if not bool(torch.isfinite(tokens).all()):  # would decode to a black image with exit 0
        raise CLIError(f"{path} holds NaN/Inf tokens (encoded by a broken model?); refusing to decode it")
    return record


def run_decode(args: argparse.Namespace) -> List[Path]:
    paths = [Path(p) for p in args.tokens]
    records = [read_tokens(p) for p in paths]  # every file is checked before loading the model
    out_dir = make_dir(Path(args.output_dir), "--output_dir")
    sizes = {r["input_size"] for r in records}
    if len(sizes) > 1:
        raise CLIError(f"the tokens files were encoded at different input sizes {sorted(sizes)}; decode them "
                       f"separately")
    model = load_model(args.checkpoint, resolve_device(args.device))
    size = sizes.pop()
    if size != model.config.input_size:  # encoded with --input_size: decode at the same size
        model = load_model(args.checkpoint, resolve_device(args.device), size)
    fingerprint = model_fingerprint(model)
    for path, r in zip(paths, records):
        if r["model_fingerprint"] != fingerprint:
            raise CLIError(f"{path} was encoded by another model ({r['model_name']}, fingerprint "
                           f"{r['model_fingerprint']}, checkpoint {r['checkpoint']}) than the loaded one "
                           f"({model.config.model_name}, fingerprint {fingerprint}); pass "
                           f"--checkpoint {r['checkpoint']}")
    device = next(model.parameters()).device
    outputs = []
    stems = unique_stems([p.with_name(p.stem.removesuffix("_tokens")) for p in paths])
    for stem, r in zip(stems, records):
        image = model.decode(r["tokens"][None].to(device), r["mask"][None].to(device))[0]  # (3, H, W)
        out = out_dir / f"{stem}_decoded.png"
        save_png(image, out)
        outputs.append(out)
    print_table(["tokens file", "tokens", "decoded image"],
                [[str(p), f"{r['num_tokens']}/{r['budget']}", str(o)] for p, r, o in zip(paths, records, outputs)])
    return outputs


def list_folder_images(folder: Path) -> List[Path]:
    if not folder.is_dir():
        raise CLIError(f"folder not found: {folder}")
    paths = sorted(p for p in folder.rglob("*") if is_image_file(p))
    if not paths:
        raise CLIError(f"no image files in {folder} (or its sub-folders)")
    return paths


def run_analyze(args: argparse.Namespace) -> List[Dict]:
    folder, output = Path(args.folder), Path(args.output)
    paths = list_folder_images(folder)
    make_dir(output.parent, "--output")
    model = load_model(args.checkpoint, resolve_device(args.device), args.input_size)
    budget = check_budget(args.budget, model)
    device = next(model.parameters()).device
    rows: List[Dict] = []
    for sl in batches(len(paths), args.batch_size):
        readable, images = [], []
        for p in paths[sl]:
            try:
                images.append(load_images([p], model.config.input_size))
                readable.append(p)
            except DataError as err:  # one bad file must not stop a folder-wide analysis
                print(f"warning: skipping {err}", file=sys.stderr)
        if not readable:
            continue
        x = torch.cat(images).to(device)
        row = [{"path": str(p.relative_to(folder))} for p in readable]
        for eps in args.epsilons:
            _, recon, info = encode_at(model, x, budget, eps)
            l1 = l1_per_image(recon, x)  # (B,)
            for i, r in enumerate(row):
                r[f"tokens@{eps:g}"] = int(info["num_tokens"][i])
                r[f"l1@{eps:g}"] = round(float(l1[i]), 6)
        for i, r in enumerate(row):
            r["png_bytes"] = png_bytes(x[i])
        rows.extend(row)
    if not rows:
        raise CLIError(f"none of the {len(paths)} image files in {folder} could be read")
    with open(output, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print_analysis_summary(rows, args.epsilons, budget, model.config.input_size)
    print(f"wrote {len(rows)} rows to {output}")
    return rows


def _rho_text(correlation: dict) -> str:
    return "n/a" if correlation["rho"] is None else f"{correlation['rho']:.2f}"  # constant side or < 3 images


def print_analysis_summary(rows: List[Dict], epsilons: Sequence[float], budget: int, input_size: int) -> None:
    sizes = [r["png_bytes"] for r in rows]
    print(f"{len(rows)} images at {input_size} px, budget {budget}; mean PNG size {sum(sizes) / len(sizes):.0f} B")
    table = []
    for eps in epsilons:
        tokens = [r[f"tokens@{eps:g}"] for r in rows]
        l1 = [r[f"l1@{eps:g}"] for r in rows]
        table.append([f"{eps:g}", f"{sum(tokens) / len(tokens):.1f}", f"{min(tokens)}-{max(tokens)}",
                      f"{sum(l1) / len(l1):.4f}", _rho_text(spearman(tokens, sizes))])
    print_table(["epsilon", "mean tokens", "range", "mean L1", "spearman(tokens, PNG bytes)"], table)


def print_table(header: List[str], rows: List[List[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())


# --- parser --------------------------------------------------------------------------------------------------

def _add_model_options(p: argparse.ArgumentParser, images: bool = True) -> None:
    """--checkpoint and --device; with `images`, also --batch_size and --input_size."""
    p.add_argument("--checkpoint", default="demo",
                   help="KARL checkpoint: a .pth / .safetensors path, or 'demo' for the shipped demo model "
                        f"(created by `{QUICKSTART}`) (default: demo)")
    p.add_argument("--ckpt", dest="checkpoint", action=DeprecatedAlias, new="--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--device", default="auto",
                   help="where to run: auto (cuda when available, else cpu), cpu, cuda, cuda:N or mps (default: auto)")
    if images:
        p.add_argument("--batch_size", type=positive_int, default=16, help="images per forward pass (default: 16)")
        p.add_argument("--input_size", type=positive_int, default=None,
                       help="resize + center-crop images to S x S (default: the model's own size); must "
                            "suit the model (a multiple of its base tokenizer's factor)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="KARL adaptive image tokenizer: encode images into a variable "
                     "number of tokens, decode them, and estimate image complexity.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{encode,decode,analyze}")

    enc = sub.add_parser("encode", help="tokenize images; print tokens, L1, PSNR; save reconstructions + tokens",
                         description="Tokenize images in one pass. Prints per image the number of tokens "
                         "used, L1 and PSNR; writes <stem>_recon.png and <stem>_tokens.pt to --output_dir.")
    enc.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format PIL reads)")
    enc.add_argument("--epsilon", type=epsilon_value, default=0.05,
                     help=f"target mean L1 reconstruction error in [0, {MAX_EPSILON}]; smaller = more tokens, "
                          "0 = adaptivity off: every token of the budget is kept (default: 0.05)")
    enc.add_argument("--budget", type=positive_int, default=None,
                     help="maximum tokens T in [1, the model's token bank] (default: the model's LTC budget, "
                          "i.e. its 2D token count)")
    enc.add_argument("--output_dir", default="karl_output", help="where outputs go (default: ./karl_output)")
    _add_model_options(enc)
    enc.set_defaults(run=run_encode)

    dec = sub.add_parser("decode", help="rebuild images from tokens files written by encode",
                         description="Decode tokens files written by `encode` into <stem>_decoded.png. "
                         "Refuses tokens made by a different model than --checkpoint.")
    dec.add_argument("tokens", nargs="+", metavar="TOKENS", help="<stem>_tokens.pt files written by encode")
    dec.add_argument("--output_dir", default="karl_output", help="where outputs go (default: ./karl_output)")
    _add_model_options(dec, images=False)
    dec.set_defaults(run=run_decode)

    ana = sub.add_parser("analyze", help="complexity estimates (tokens per epsilon) of every image in a folder",
                         description="Encode every image of FOLDER (recursively) at each epsilon and write a "
                         "CSV: path, tokens@eps and l1@eps per epsilon, png_bytes (size of the preprocessed "
                         "image as PNG). Prints a summary. Unreadable files are skipped with a warning.")
    ana.add_argument("folder", metavar="FOLDER", help="folder of images (searched recursively)")
    ana.add_argument("--epsilons", action=ListOption, type=epsilon_value, default=list(DEFAULT_EPSILONS),
                     help="epsilons, space- or comma-separated, each in [0, %s]; 0 = every token of the "
                          "budget (default: 0.03 0.05 0.09)" % MAX_EPSILON)
    ana.add_argument("--budget", type=positive_int, default=None,
                     help="maximum tokens T (default: the model's LTC budget)")
    ana.add_argument("--output", default="karl_output/complexity.csv",
                     help="CSV file to write (default: ./karl_output/complexity.csv)")
    _add_model_options(ana)
    ana.set_defaults(run=run_analyze)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit codes: 0 ok, 1 user error (one line on stderr), 130 interrupted."""
    try:
        args = build_parser().parse_args(argv)
        args.run(args)
        return 0
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, OSError, torch.OutOfMemoryError) as err:
        if os.environ.get("KARL_DEBUG"):
            raise
        message = " ".join(str(err).split())  # one line, whatever the exception's layout
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
