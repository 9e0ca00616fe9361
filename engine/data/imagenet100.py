"""ImageNet-100: the 100-class subset of ImageNet-1k used by CMC (Tian et al., "Contrastive Multiview
Coding", 2019; list published as imagenet100.txt in the CMC repository) and by the KARL release.

Linking/copying the subset out of a full ImageNet tree (run_scripts/create_imagenet100.py) never writes
outside the destination: existing symlinks are not written through, and neither the destination nor
anything it writes into may lie inside the source tree.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from engine.data.errors import DataError

# WordNet ids in the order of CMC's imagenet100.txt (100 unique ids; checked by tests/test_imagenet100.py).
IMAGENET100_CLASSES: tuple[str, ...] = (
    "n02869837", "n01749939", "n02488291", "n02107142", "n13037406", "n02091831", "n04517823", "n04589890",
    "n03062245", "n01773797", "n01735189", "n07831146", "n07753275", "n03085013", "n04485082", "n02105505",
    "n01983481", "n02788148", "n03530642", "n04435653", "n02086910", "n02859443", "n13040303", "n03594734",
    "n02085620", "n02099849", "n01558993", "n04493381", "n02109047", "n04111531", "n02877765", "n04429376",
    "n02009229", "n01978455", "n02106550", "n01820546", "n01692333", "n07714571", "n02974003", "n02114855",
    "n03785016", "n03764736", "n03775546", "n02087046", "n07836838", "n04099969", "n04592741", "n03891251",
    "n02701002", "n03379051", "n02259212", "n07715103", "n03947888", "n04026417", "n02326432", "n03637318",
    "n01980166", "n02113799", "n02086240", "n03903868", "n02483362", "n04127249", "n02089973", "n03017168",
    "n02093428", "n02804414", "n02396427", "n04418357", "n02172182", "n01729322", "n02113978", "n03787032",
    "n02089867", "n02119022", "n03777754", "n04238763", "n02231487", "n03032252", "n02138441", "n02104029",
    "n03837869", "n03494278", "n04136333", "n03794056", "n03492542", "n02018207", "n04067472", "n03930630",
    "n03584829", "n02123045", "n04229816", "n02100583", "n03642806", "n04336792", "n03259280", "n02116738",
    "n02108089", "n03424325", "n01855672", "n02090622",
)
SPLITS = ("train", "val")


@dataclass
class SplitReport:
    split: str
    num_classes: int = 0
    num_images: int = 0
    created: int = 0  # links made or files copied by this run
    kept: int = 0  # correct links / identical files already present
    replaced: list[str] = field(default_factory=list)  # stale symlinks re-pointed


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def check_source(src: Path, classes: tuple[str, ...] = IMAGENET100_CLASSES) -> None:
    """Fail before writing anything when SRC lacks a split or a class (the message lists them)."""
    if not src.is_dir():
        raise DataError(f"ImageNet folder not found: {src} (expected <imagenet_dir>/train/<wnid>/*.JPEG "
                        "and <imagenet_dir>/val/<wnid>/*.JPEG)")
    problems = []
    for split in SPLITS:
        split_dir = src / split
        if not split_dir.is_dir():
            problems.append(f"missing split folder {split_dir}")
            continue
        missing = [wnid for wnid in classes if not (split_dir / wnid).is_dir()]
        if missing:
            hint = ""
            if split == "val" and any(split_dir.glob("ILSVRC2012_val_*")):
                hint = " (the val images are not sorted into class folders: run ImageNet's valprep.sh first)"
            problems.append(f"{split_dir} lacks {len(missing)} of the {len(classes)} classes: "
                            f"{' '.join(missing)}{hint}")
    if problems:
        raise DataError("the ImageNet source is incomplete:\n  " + "\n  ".join(problems))


def check_destination(src: Path, dst: Path) -> None:
    """Refuse destinations that would write into the source tree (also through symlinked folders)."""
    if _is_within(dst, src):
        raise DataError(f"the destination {dst} lies inside the source {src}; choose a folder outside it")
    for split in SPLITS:
        split_dir = dst / split
        if split_dir.is_symlink():
            raise DataError(f"{split_dir} is a symlink; refusing to write through it (remove it first)")
        if split_dir.exists() and _is_within(split_dir.resolve(), src):
            raise DataError(f"{split_dir} resolves into the source tree {src}; refusing to write there")


def _count_files(folder: Path) -> int:
    return sum(1 for entry in os.scandir(folder) if entry.is_file())


def _link_class(src_dir: Path, dst_dir: Path, report: SplitReport) -> None:
    if dst_dir.is_symlink():
        if dst_dir.resolve() == src_dir.resolve():
            report.kept += 1
            return
        dst_dir.unlink()  # a stale link: removing it deletes only the link, never its target
        report.replaced.append(dst_dir.name)
    elif dst_dir.exists():
        raise DataError(f"{dst_dir} exists and is not a link to {src_dir}; remove it or pick another "
                        "destination (or rerun with --copy if it is a copy)")
    dst_dir.symlink_to(src_dir.resolve(), target_is_directory=True)
    report.created += 1


def _copy_class(src_dir: Path, dst_dir: Path, report: SplitReport) -> None:
    if dst_dir.is_symlink():
        raise DataError(f"{dst_dir} is a symlink (from a run without --copy); refusing to copy through it "
                        "into the source: remove it first")
    dst_dir.mkdir(exist_ok=True)
    for entry in sorted(os.scandir(src_dir), key=lambda e: e.name):
        if not entry.is_file():
            continue
        target = dst_dir / entry.name
        if target.is_symlink():
            raise DataError(f"{target} is a symlink; refusing to write through it")
        if target.is_file() and target.stat().st_size == entry.stat().st_size:
            report.kept += 1
            continue
        partial = target.with_name(target.name + ".part")
        shutil.copyfile(entry.path, partial)
        os.replace(partial, target)  # a crash never leaves a truncated image under the final name
        report.created += 1


def create_imagenet100(src: str | Path, dst: str | Path, copy: bool = False,
                       classes: tuple[str, ...] = IMAGENET100_CLASSES) -> list[SplitReport]:
    """Link (default: one symlink per class folder) or copy the ImageNet-100 classes of SRC into
    DST/{train,val}/<wnid>. Idempotent: correct links and identical files are kept."""
    src, dst = Path(src).resolve(), Path(dst).absolute()
    check_source(src, classes)
    dst_resolved = dst.resolve()
    check_destination(src, dst_resolved)
    reports = []
    for split in SPLITS:
        split_dir = dst_resolved / split
        split_dir.mkdir(parents=True, exist_ok=True)
        report = SplitReport(split)
        for wnid in classes:
            src_dir, dst_dir = src / split / wnid, split_dir / wnid
            if not _is_within(dst_dir.parent.resolve(), dst_resolved):
                raise DataError(f"{dst_dir} would be written outside {dst_resolved}; refusing")
            (_copy_class if copy else _link_class)(src_dir, dst_dir, report)
            report.num_classes += 1
            report.num_images += _count_files(dst_dir)
        reports.append(report)
    return reports
