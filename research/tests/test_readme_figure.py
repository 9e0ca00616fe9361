"""research/readme_figure.py: draws one column per family and one row per epsilon, and explains bad input."""
from __future__ import annotations

import pytest
from PIL import Image

from research import readme_figure
from tests.test_cli import make_tiny_checkpoint


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    from engine.demo_data import DemoDataConfig, generate_demo_dataset

    root = tmp_path_factory.mktemp("figure") / "demo"
    generate_demo_dataset(root, DemoDataConfig(resolution=64, num_train=9, num_val=18, seed=0,
                                               use_system_photos=False))
    return root


def test_figure_has_a_row_per_epsilon_and_a_column_per_family(demo_folder, tmp_path, capsys):
    figure = readme_figure
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.pth")
    out = tmp_path / "fig.png"
    argv = ["--checkpoint", str(ckpt), "--data_path", str(demo_folder), "--output", str(out)]
    assert figure.main(argv + ["--families", "flat", "noise", "--epsilons", "0.05"]) == 0
    narrow = Image.open(out).size
    assert figure.main(argv + ["--families", "flat", "shapes", "texture", "noise", "--epsilons", "0.03", "0.09"]) == 0
    wide = Image.open(out).size
    assert wide[0] > 1.5 * narrow[0] and wide[1] > 1.2 * narrow[1]  # 4 columns vs 2, 3 rows vs 2
    assert f"wrote {out}" in capsys.readouterr().out


def test_missing_data_or_family_is_explained(demo_folder, tmp_path):
    figure = readme_figure
    with pytest.raises(SystemExit, match="metadata.csv not found.*prepare_demo_data.py"):
        figure.main(["--data_path", str(tmp_path / "nowhere"), "--output", str(tmp_path / "f.png")])
    with pytest.raises(SystemExit, match="no val image of family 'unicorn'"):
        figure.main(["--data_path", str(demo_folder), "--families", "unicorn", "--output", str(tmp_path / "f.png")])
