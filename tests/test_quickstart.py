"""run_scripts/quickstart.sh plumbing: step order, stamps and skipping, reruns after a failure or a deleted
output, profiles, bad arguments, paths independent of the working directory.

The real steps take minutes, so the script runs against a stub interpreter (KARL_VENV_DIR pointing at a
folder whose bin/python logs its arguments and creates the file each step promises). The steps' own
programs are tested in their packages' tests; run_scripts/quickstart_report.py is tested below for real.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "run_scripts" / "quickstart.sh"

# Logs one line per call; creates the outputs the script checks (--creates) under --output_dir/--output;
# exits 1 when its arguments contain $STUB_FAIL.
STUB = r"""#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
if [ -n "${STUB_FAIL:-}" ] && [[ "$*" == *"$STUB_FAIL"* ]]; then echo "stub: failing" >&2; exit 1; fi
prev=""
for arg in "$@"; do
    if [ "$prev" = "--write" ]; then
        mkdir -p "$(dirname "$arg")"; printf 'EPOCHS=3\n# {"stub": true}\n' > "$arg"
    elif [ "$prev" = "--output" ] && [[ "$arg" == *.json ]]; then
        mkdir -p "$(dirname "$arg")"; touch "$arg"
    elif [ "$prev" = "--output_dir" ] || [ "$prev" = "--output" ]; then
        mkdir -p "$arg"
        touch "$arg/metadata.csv" "$arg/patch_vae_demo.ckpt" "$arg/checkpoint-last.pth" "$arg/metrics.json" "$arg/SHA256SUMS"
    fi
    prev="$arg"
done
"""


@pytest.fixture
def stub_env(tmp_path: Path) -> dict:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(STUB)
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUICKSTART_", "STUB_", "DEMO_DATA_DIR"))}
    env.update(KARL_VENV_DIR=str(venv), KARL_SKIP_INSTALL="1", STUB_LOG=str(tmp_path / "calls.log"),
               QUICKSTART_OUTPUT_DIR=str(tmp_path / "out"), QUICKSTART_PROFILE="short")
    return env


def run(env: dict, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, cwd=cwd or REPO_ROOT, capture_output=True,
                          text=True, timeout=60)


def calls(env: dict) -> list[str]:
    log = Path(env["STUB_LOG"])
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


PROGRAMS = {"prepare_demo_data": "prepare_demo_data", "base_tokenizer_pretrain": "base_tokenizer_pretrain",
            "engine.schedule_budget": "schedule",
            "--stage latent_distillation": "latent_distillation", "--stage full_finetuning": "full_finetuning",
            "quickstart_report.py subset": "subset", "evaluate.py": "evaluate.py",
            "research.halting_headroom": "halting_headroom", "quickstart_report.py checks": "checks",
            "quickstart_report.py export": "export"}


def kinds(lines: list[str]) -> list[str]:
    """Which program each call ran."""
    return [next(name for key, name in PROGRAMS.items() if key in line) for line in lines
            if any(key in line for key in PROGRAMS)]


TRAINED_STEPS = ["prepare_demo_data", "base_tokenizer_pretrain", "latent_distillation", "full_finetuning", "subset",
                 "evaluate.py", "halting_headroom", "checks"]
# short profile: stage 1's epochs from a calibration run; then the shipped demo model on the same images
ALL_STEPS = (TRAINED_STEPS[:2] + ["schedule"] + TRAINED_STEPS[2:]
             + ["evaluate.py", "halting_headroom", "checks"])


def test_first_run_runs_every_step_in_order_then_rerun_skips_them(stub_env, tmp_path):
    first = run(stub_env)
    assert first.returncode == 0, first.stderr
    assert kinds(calls(stub_env)) == ALL_STEPS
    stamps = sorted(p.name for p in (tmp_path / "out" / ".steps").iterdir())
    assert stamps == sorted(f"{n}.done" for n in ("demo_data", "base_tokenizer", "schedule", "latent_distillation",
                                                   "full_finetuning", "eval_subset", "evaluate", "halting_headroom",
                                                   "evaluate_shipped", "halting_headroom_shipped"))
    shipped = next(l for l in first.stdout.splitlines() if "evaluate_shipped" in l)
    assert "--checkpoint demo" in shipped and f"--output_dir {tmp_path}/out/shipped_demo_model" in shipped
    assert "[12/12 shipped_method_checks]" in first.stdout
    stage1 = next(l for l in first.stdout.splitlines() if "latent_distillation]" in l)
    assert "--epochs 3" in stage1  # the calibration step's choice
    assert "time budgets: stage 0 150 s, stage 1 720 s" in first.stdout
    headroom = next(l for l in first.stdout.splitlines() if "halting_headroom]" in l)
    assert f"--checkpoint {tmp_path}/out/stage2_full_finetuning/checkpoint-last.pth" in headroom
    assert f"--data_path {tmp_path}/out/eval_data" in headroom
    headroom = next(l for l in first.stdout.splitlines() if "halting_headroom_shipped]" in l)
    assert "--checkpoint demo" in headroom and f"--output {tmp_path}/out/shipped_demo_model/halting_headroom.json" in headroom
    second = run(stub_env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("already done") == 10
    assert kinds(calls(stub_env)) == ["checks", "checks"]  # cheap report steps always rerun


def test_training_steps_resume_and_use_absolute_paths(stub_env, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run(stub_env, cwd=elsewhere).returncode == 0
    lines = calls(stub_env)
    train = [l for l in lines if "main_train" in l or "base_tokenizer_pretrain" in l]
    assert len(train) == 3 and all("--resume auto" in l for l in train)
    stage2 = next(l for l in lines if "--stage full_finetuning" in l)
    assert f"--finetune {tmp_path}/out/stage1_latent_distillation/checkpoint-last.pth" in stage2
    assert f"--config {REPO_ROOT}/engine/configs/quickstart_short.yaml" in stage2
    assert f"{REPO_ROOT}/datasets/demo" in lines[0]
    assert not list(elsewhere.iterdir())  # nothing written to the working directory


def test_failed_step_stops_the_run_and_is_redone_next_time(stub_env):
    failing = dict(stub_env, STUB_FAIL="--stage full_finetuning")
    result = run(failing)
    assert result.returncode != 0
    assert kinds(calls(stub_env)) == ALL_STEPS[:5]  # nothing after the failed step
    again = run(stub_env)
    assert again.returncode == 0, again.stderr
    assert kinds(calls(stub_env)) == ALL_STEPS[4:]  # resumes at the failed step


def test_deleted_output_or_force_reruns(stub_env, tmp_path):
    assert run(stub_env).returncode == 0
    calls(stub_env)
    (tmp_path / "out" / "stage1_latent_distillation" / "checkpoint-last.pth").unlink()
    assert run(stub_env).returncode == 0
    assert kinds(calls(stub_env)) == ["latent_distillation", "checks", "checks"]
    assert run(dict(stub_env, QUICKSTART_FORCE="1")).returncode == 0
    assert kinds(calls(stub_env)) == ALL_STEPS
    # finished training steps start fresh instead of resuming from (and stopping at) their old checkpoint
    for stage in ("stage1_latent_distillation", "stage2_full_finetuning"):
        assert (tmp_path / "out" / stage / "checkpoint-last.pth.previous").is_file()


def test_other_profile_or_settings_rerun_changed_steps(stub_env, tmp_path):
    assert run(stub_env).returncode == 0
    calls(stub_env)
    full = run(stub_env, "--profile", "full")  # same output dir, different commands: all steps but the data
    assert full.returncode == 0, full.stderr
    assert kinds(calls(stub_env)) == TRAINED_STEPS[1:] + ["export"]  # the full profile makes the shipped model
    stamp = (tmp_path / "out" / ".steps" / "latent_distillation.done").read_text()
    assert "quickstart_full.yaml" in stamp and "# config sha256 " in stamp  # an edited YAML reruns the stage
    assert (tmp_path / "out" / "stage1_latent_distillation" / "checkpoint-last.pth.previous").is_file()
    assert not list((tmp_path / "out" / "base_tokenizer").glob("*.previous"))  # stage 0 continues instead


def test_help_prints_the_settings_and_runs_nothing(stub_env):
    result = run(stub_env, "--help")
    assert result.returncode == 0
    assert "QUICKSTART_PROFILE" in result.stdout and "QUICKSTART_OUTPUT_DIR" in result.stdout
    assert not calls(stub_env)


@pytest.mark.parametrize("args, env_profile, message", [
    (["--profile", "huge"], "short", "unknown profile 'huge' (allowed: short, full, smoke)"),
    ([], "tiny", "unknown profile 'tiny' (allowed: short, full, smoke)"),
    (["--epochs", "3"], "short", "unknown argument '--epochs'"),
])
def test_bad_arguments_fail_with_a_message(stub_env, args, env_profile, message):
    result = run(dict(stub_env, QUICKSTART_PROFILE=env_profile), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not calls(stub_env)


# --- run_scripts/quickstart_report.py -------------------------------------------------------------------------

def report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "python"), str(REPO_ROOT / "run_scripts" / "quickstart_report.py"),
                           *args], capture_output=True, text=True, timeout=120)


def test_subset_keeps_every_family_and_its_metadata(demo_data_dir, tmp_path):
    out = tmp_path / "subset"
    result = report("subset", "--data", str(demo_data_dir), "--output", str(out), "--per_family", "1")
    assert result.returncode == 0, result.stderr
    families = sorted(p.name for p in (out / "val").iterdir())
    assert families == sorted(p.name for p in (demo_data_dir / "val").iterdir())
    assert all(len(list((out / "val" / f).iterdir())) == 1 for f in families)
    rows = (out / "metadata.csv").read_text().splitlines()
    assert len(rows) == 1 + len(families) and all(r.split(",")[1].startswith("val/") for r in rows[1:])
    bad = report("subset", "--data", str(tmp_path / "nope"), "--output", str(out))
    assert bad.returncode == 2 and "is not a demo dataset" in bad.stderr


def _metrics(tokens_by_eps: dict, family_tokens: dict, rho_png, rho_level) -> dict:
    return {
        "variable": {"per_epsilon": {e: {"tokens": t, "l1": float(e) + 0.01} for e, t in tokens_by_eps.items()}},
        "complexity": {
            "per_family": {f: {"mean_tokens_eps_0.05": t} for f, t in family_tokens.items()},
            "spearman_tokens_vs": {"0.05": {"png_bytes": {"rho": rho_png}, "complexity_level": {"rho": rho_level}}},
        },
    }


def test_checks_pass_fail_and_report_section(tmp_path):
    good = _metrics({"0.03": 40, "0.05": 30, "0.09": 12}, {"flat": 4, "shapes": 20, "texture": 40, "noise": 60},
                    0.8, 0.7)
    (tmp_path / "metrics.json").write_text(json.dumps(good))
    (tmp_path / "report.md").write_text("# Evaluation\n")
    for _ in range(2):  # a rerun replaces its section instead of appending another
        result = report("checks", "--eval_dir", str(tmp_path))
        assert result.returncode == 0, result.stderr
    assert result.stdout.count("[PASS]") == 6 and "[FAIL]" not in result.stdout
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# Evaluation") and text.count("## Method checks") == 1
    assert "eps 0.05: L1 0.0600" in text
    # the report opens with the verdict (once, after reruns), with the hardware and precision behind it
    opening = text.split("\n\n")[1]
    assert text.count("**Verdict") == 1 and "**Verdict: this model shows the method**" in opening
    assert "(3 of 3 checks pass)" in opening and "flat 4.0, noise 60.0" in opening and "rho 0.700" in opening
    assert "PyTorch CPU capability" in opening and "precision auto -> " in opening

    bad = _metrics({"0.03": 64, "0.05": 64, "0.09": 64}, {"flat": 64, "shapes": 64, "texture": 64, "noise": 64},
                   None, None)
    (tmp_path / "metrics.json").write_text(json.dumps(bad))
    result = report("checks", "--eval_dir", str(tmp_path))
    assert result.returncode == 0
    assert result.stdout.count("[FAIL]") == 3 and "undefined (constant token count)" in result.stdout
    saved = json.loads((tmp_path / "method_checks.json").read_text())
    assert [c["passed"] for c in saved["checks"]] == [False, False, None, None, False, None, None]
    text = (tmp_path / "report.md").read_text()
    assert "does NOT yet show the method" in text and "(0 of 3 checks pass)" in text and text.count("**Verdict") == 1


def test_checks_add_the_learned_vs_ideal_table_when_the_headroom_file_exists(tmp_path):
    good = _metrics({"0.03": 60, "0.05": 40, "0.09": 20}, {"flat": 4, "shapes": 20, "texture": 40, "noise": 60},
                    0.8, 0.7)
    (tmp_path / "metrics.json").write_text(json.dumps(good))
    headroom = {"token_counts": {"epsilons": [0.03, 0.05], "budget": 32, "groups": {
        "all": {"images": 2, "learned": [30.0, 27.5], "ideal": [28.0, 20.0]},
        "flat": {"images": 1, "learned": [29.0, 27.0], "ideal": [10.0, None]}}}}
    (tmp_path / "halting_headroom.json").write_text(json.dumps(headroom))
    result = report("checks", "--eval_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "learned / exactly fitted head: all 27.5 / 20.0, flat 27.0 / -" in result.stdout  # the eps 0.05 column
    text = (tmp_path / "report.md").read_text()
    assert "| all (2) | 27.5 | 20.0 |" in text and "| flat (1) | 27.0 | - |" in text
    saved = json.loads((tmp_path / "method_checks.json").read_text())
    assert saved["halting_headroom"][1] == {"group": "flat", "images": 1, "learned": 27.0, "ideal": None}
    assert "encoder probe" not in result.stdout and "encoder_probe" not in saved  # a file without the probe
    headroom["encoder_probe"] = {"epsilon": 0.05, "r2_loo": 0.3412, "alpha": 100.0, "images": 2}
    (tmp_path / "halting_headroom.json").write_text(json.dumps(headroom))
    result = report("checks", "--eval_dir", str(tmp_path))
    assert "encoder probe at eps 0.05: leave-one-out R^2 0.34" in result.stdout
    assert "Encoder probe at eps 0.05: leave-one-out R^2 0.34" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "method_checks.json").read_text())["encoder_probe"]["r2_loo"] == 0.3412
    headroom["encoder_probe"] = {"epsilon": 0.05, "r2_loo": None, "skipped": "need at least 3 images"}
    (tmp_path / "halting_headroom.json").write_text(json.dumps(headroom))
    assert "encoder probe" not in report("checks", "--eval_dir", str(tmp_path)).stdout
    (tmp_path / "halting_headroom.json").write_text(json.dumps({"token_counts": {"epsilons": [0.09]}}))
    result = report("checks", "--eval_dir", str(tmp_path))
    assert result.returncode == 2 and "halting_headroom.json" in result.stderr


def test_checks_without_metrics_fail_clearly(tmp_path):
    result = report("checks", "--eval_dir", str(tmp_path))
    assert result.returncode == 2 and "metrics.json does not exist" in result.stderr


def test_smoke_profile_runs_every_real_step(tmp_path):
    """The real programs end to end with the smoke profile (21 s on 2 idle cores): data, stage 0, both
    training stages, evaluation, report with the method checks; a rerun skips every finished step."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUICKSTART_", "DEMO_DATA_DIR"))}
    env.update(QUICKSTART_PROFILE="smoke", QUICKSTART_OUTPUT_DIR=str(tmp_path / "out"), KARL_SKIP_INSTALL="1",
               QUICKSTART_DEVICE="cpu")
    first = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"fixed", "variable", "calibration", "search", "complexity"} <= set(metrics)
    assert metrics["meta"]["num_images"] == 9  # one val image per family
    report_md = (out / "report.md").read_text()
    assert report_md.count("## Method checks (quickstart)") == 1
    assert "| images | learned | ideal |" in report_md  # the halting-headroom table, from halting_headroom.json
    assert "all (9)" in report_md and "noise (1)" in report_md
    assert (out / "stage2_full_finetuning" / "checkpoint-last.pth").is_file()
    second = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and second.stdout.count("already done") == 7, second.stdout[-2000:]
