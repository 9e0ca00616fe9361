"""The report's reconstruction grids show every family, not the first batch's (path-sorted: checkerboards and
flats only)."""
from __future__ import annotations

import torch

from evaluation.runner import EvalBatch, GridSamples, Reconstruction, grid_sample_ids

FAMILIES = ["checkerboard", "flat", "fractal", "gradient", "noise", "photo", "shapes", "stripes", "texture"]


def metadata(per_family: int = 4) -> dict:
    return {f"val/{f}/{f}_{i:03d}.png": {"family": f} for f in FAMILIES for i in range(per_family)}


def test_sample_ids_cover_every_family_in_turn():
    ids = grid_sample_ids(metadata(), 8)
    assert [i.split("/")[1] for i in ids] == FAMILIES[:8]  # one of each before a second of any
    ids = grid_sample_ids(metadata(), 12)
    assert {i.split("/")[1] for i in ids} == set(FAMILIES) and len(ids) == 12
    assert grid_sample_ids({"a.png": {}}, 8) is None  # no families: the first images


def test_grid_collects_the_wanted_images_from_every_batch():
    meta = metadata()
    ids = sorted(meta)  # the evaluation reads in path order: the first batch holds checkerboards and flats
    images = torch.rand(len(ids), 3, 8, 8)
    wanted = grid_sample_ids(meta, 9)
    grid = GridSamples(9, wanted=wanted)
    for setting in ("eps0.05", "eps0.09"):
        for s in range(0, len(ids), 8):
            batch = EvalBatch(images[s:s + 8], ids[s:s + 8])
            recon = Reconstruction(images[s:s + 8] * 0.5, torch.arange(s, s + len(batch.ids)))
            grid.offer(setting, batch, recon)
    assert grid.ids == wanted and {i.split("/")[1] for i in grid.ids} == set(FAMILIES)
    positions = [ids.index(i) for i in wanted]
    assert torch.equal(grid.originals, images[positions])
    recon, tokens = grid.rows["eps0.09"]
    assert torch.equal(recon, images[positions] * 0.5) and tokens.tolist() == positions


def test_grid_without_metadata_keeps_the_first_images():
    images = torch.rand(10, 3, 8, 8)
    grid = GridSamples(3)
    grid.offer("b16", EvalBatch(images[:2], ["0", "1"]), Reconstruction(images[:2], torch.tensor([1, 2])))
    grid.offer("b16", EvalBatch(images[2:], [str(i) for i in range(2, 10)]), Reconstruction(images[2:], torch.arange(8)))
    assert grid.ids == ["0", "1", "2"] and grid.rows["b16"][1].tolist() == [1, 2, 0]
