"""Starting values of the learned 2D positional maps (modules/positional.py, KARLConfig.positional_embedding_init)."""
import pytest
import torch

from kolmogorov_tokenizers.config import KARLConfig
from modules.positional import initial_positional_map, sincos_2d_map
from test_karl_model import tiny_demo_model


def _similarity_by_distance(pos_map: torch.Tensor) -> dict:
    """Mean cosine similarity between cells at Manhattan distance 1 and at distance >= size / 2."""
    w, size, _ = pos_map.shape
    v = torch.nn.functional.normalize(pos_map.flatten(1).T, dim=1)  # (size^2, w)
    sim = v @ v.T
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dist = (ys[:, None] - ys[None]).abs() + (xs[:, None] - xs[None]).abs()
    return {"near": sim[dist == 1].mean().item(), "far": sim[dist >= size // 2].mean().item()}


def test_sincos_map_makes_neighbours_similar_and_random_does_not():
    torch.manual_seed(0)
    sincos = _similarity_by_distance(sincos_2d_map(128, 16))
    random = _similarity_by_distance(initial_positional_map("random", 128, 16))
    assert sincos["near"] > 0.9 and sincos["near"] - sincos["far"] > 0.3  # smooth: attention can start local
    assert abs(random["near"]) < 0.1 and abs(random["near"] - random["far"]) < 0.1  # white noise over cells


def test_sincos_map_shape_values_and_odd_widths():
    m = sincos_2d_map(130, 8)  # 130 = 4 * 32 + 2 zero channels
    assert m.shape == (130, 8, 8) and m.abs().max() <= 1.0
    assert torch.all(m[128:] == 0)
    rows, cols = m[:64], m[64:128]
    assert torch.allclose(rows, rows[:, :, :1].expand_as(rows))  # row channels vary with y only
    assert torch.allclose(cols, cols[:, :1, :].expand_as(cols))  # column channels vary with x only
    with pytest.raises(ValueError, match="width >= 4"):
        sincos_2d_map(3, 8)


def test_model_starts_from_the_chosen_map_with_the_same_keys():
    with pytest.raises(ValueError, match="positional_embedding_init must be one of"):
        KARLConfig(positional_embedding_init="learned")
    default = tiny_demo_model()
    smooth = tiny_demo_model(positional_embedding_init="sincos")
    assert default.config.positional_embedding_init == "random"  # the release's start stays the default
    assert set(default.state_dict()) == set(smooth.state_dict())
    P, we, wd = smooth.config.pos_embed_size, smooth.config.encoder_width, smooth.config.decoder_width
    torch.testing.assert_close(smooth.encoder_positional_embedding.detach(), sincos_2d_map(we, P))
    torch.testing.assert_close(smooth.decoder_positional_embedding.detach(), sincos_2d_map(wd, P))
    assert smooth.encoder_positional_embedding.requires_grad


def test_maps_are_resized_to_the_grid_by_nearest_as_the_release_or_bilinearly():
    release, ours = tiny_demo_model(), tiny_demo_model(positional_resize="bilinear")
    assert release.config.positional_resize == "nearest"  # the release's, by default
    ours.load_state_dict(release.state_dict())
    pos = release.encoder_positional_embedding.detach()  # (w, 16, 16) on an 8 x 8 grid
    # nearest keeps rows and columns 0, 2, 4, ...: the only entries the released models ever trained
    expected = pos[:, ::2, ::2].flatten(1).T.unsqueeze(0)  # (1, 64, w)
    torch.testing.assert_close(release._grid_positions(pos), expected, rtol=0, atol=0)
    bilinear = torch.nn.functional.interpolate(pos[None], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours._grid_positions(pos), bilinear[0].flatten(1).T.unsqueeze(0))
    with pytest.raises(ValueError, match="positional_resize must be one of"):
        KARLConfig(positional_resize="bicubic")
