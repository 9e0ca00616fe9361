"""research/code_paths.py: the tracer lists the files a path runs, and the encode path stays small and low."""
from __future__ import annotations

from research import code_paths


def test_the_tracer_sees_the_files_whose_functions_run():
    from kolmogorov_tokenizers.metrics import l1_per_image
    import torch

    with code_paths.project_files_entered() as seen:
        l1_per_image(torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2))
    assert set(seen) == {"kolmogorov_tokenizers/metrics.py"}


def test_encode_runs_in_few_files_of_the_model_floors_only(tmp_path, capsys):
    result = code_paths.measure_encode(tmp_path)
    encode = result["encode"]["files"]
    assert "kolmogorov_tokenizers/karl.py" in encode and "modules/transformer.py" in encode
    assert not [f for f in encode + result["load"]["files"] if f.startswith(("engine/", "evaluation/"))]
    # karl.py + conditioning (epsilon -> bin) + halting + transformer + the demo base (patch_vae, vae)
    assert len(encode) <= 6, encode
    assert "encode (model.encode): " in capsys.readouterr().out
