#!/usr/bin/env bash
# Quickstart: the whole method on the embedded demo data, from nothing to a report, on a CPU or a GPU.
#   bash run_scripts/quickstart.sh                      # profile "short" (the default)
#   bash run_scripts/quickstart.sh --profile full       # = QUICKSTART_PROFILE=full: the demo model's schedule
# Steps: venv -> demo data -> stage 0 (patch_vae_demo base tokenizer) -> stage 1 (latent distillation) ->
# stage 2 (full finetuning) -> evaluation (fixed / variable allocation, calibration, search baseline,
# complexity) on a per-family subset of the val split -> method checks -> [full: export of the demo model].
# Every finished step leaves a stamp in $OUT/.steps (with its command line); a rerun skips it. Training steps
# run with --resume auto, so an interrupted step continues from its last checkpoint. QUICKSTART_FORCE=1 redoes
# every step. Settings (environment):
#   QUICKSTART_PROFILE     short | full | smoke (smoke: seconds, plumbing only; used by the tests)
#   QUICKSTART_OUTPUT_DIR  default output_dir/quickstart (short), output_dir/quickstart_<profile> otherwise
#   DEMO_DATA_DIR          default datasets/demo (smoke: a tiny set inside the output dir)
#   QUICKSTART_DEVICE      auto (default: cuda when available) | cpu | cuda | cuda:N
#   QUICKSTART_STAGE0_S    short profile: stage 0's time budget in seconds (default 150)
#   QUICKSTART_STAGE1_S    short profile: stage 1's time budget in seconds (default 720)
# The short profile trains for the same wall time on every machine: stage 0 sets its step count from its first
# seconds' speed, stage 1's epochs come from a 30-step calibration run (engine/schedule_budget.py), so a faster
# machine trains more steps, never fewer. Precision is `auto` (bf16 only where this CPU runs it faster).
set -euo pipefail

PROFILE="${QUICKSTART_PROFILE:-short}"
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) PROFILE="${2:?--profile needs a value: short, full or smoke}"; shift 2 ;;
        --profile=*) PROFILE="${1#--profile=}"; shift ;;
        -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "quickstart.sh: error: unknown argument '$1' (allowed: --profile short|full|smoke, --help)" >&2; exit 2 ;;
    esac
done

source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
HERE="$REPO_ROOT/run_scripts"
DEVICE="${QUICKSTART_DEVICE:-auto}"

# Per profile: stage-0 length, stage-1 epochs, stage-2 length and lr, eval images per family and options.
# Stage 0 trains the patch KL VAE (base_tokenizers/patch_vae.py) at lr 1e-3, Adam betas (0.9, 0.99), without
# its GAN: ~230 img/s on 2 threads of an AVX-512 bf16 CPU, val L1 0.043 after 1500 steps. (The LDM-style
# vqgan_demo needed 890 s for val L1 0.129: too weak a base for KARL to show anything.) Training settings
# shared by both KARL stages: engine/configs/quickstart_<profile>.yaml.
# The short profile's budgets: on an idle 2-core AVX2 CPU (fp32, stage 1 at 35-39 img/s) 720 s of stage 1 are
# 6 epochs (1500 steps, ~650-690 s); the whole run, evaluations and install included, then takes ~17-18 min.
DATA_ARGS=(); EVAL_ARGS=()
STAGE0_COMMON=(--batch_size 16 --lr 1e-3 --betas 0.9 0.99)
case "$PROFILE" in
    short)
        OUT_DEFAULT="$REPO_ROOT/output_dir/quickstart"; DATA_DEFAULT="$REPO_ROOT/datasets/demo"
        STAGE0_BUDGET="${QUICKSTART_STAGE0_S:-150}"; STAGE1_BUDGET="${QUICKSTART_STAGE1_S:-720}"
        STAGE0_ARGS=(--steps 1500 --time_budget_s "$STAGE0_BUDGET" --min_steps 200 "${STAGE0_COMMON[@]}"
                     --disc_start 1500 --save_every 100 --eval_batches 10 --log_every 25)
        # stage 1: --epochs from the calibration step below, between 2 and the former fixed schedule's 30
        STAGE1_MIN_EPOCHS=2; STAGE1_MAX_EPOCHS=30; STAGE1_ARGS=()
        STAGE2_ARGS=(--epochs 1 --max_steps 20 --warmup_epochs 0.05 --blr 6.4e-3)
        EVAL_PER_FAMILY=6; EVAL_ARGS=(--search_epsilons 0.05 0.09) ;;
    full)
        OUT_DEFAULT="$REPO_ROOT/output_dir/quickstart_full"; DATA_DEFAULT="$REPO_ROOT/datasets/demo"
        STAGE0_ARGS=(--steps 2000 "${STAGE0_COMMON[@]}" --disc_start 2000 --save_every 250 --eval_batches 10 --log_every 100)
        STAGE1_ARGS=(--epochs 80); STAGE1_BUDGET=""
        STAGE2_ARGS=(--epochs 1 --max_steps 40 --warmup_epochs 0.05 --blr 6.4e-3)
        EVAL_PER_FAMILY=8; EVAL_ARGS=() ;;
    smoke)
        OUT_DEFAULT="$REPO_ROOT/output_dir/quickstart_smoke"; DATA_DEFAULT=""
        DATA_ARGS=(--num_train 36 --num_val 18 --no_system_photos)
        STAGE0_ARGS=(--steps 2 --batch_size 4 --disc_start 1 --save_every 1 --eval_batches 1 --log_every 1)
        STAGE1_ARGS=(--epochs 1 --max_steps 2); STAGE1_BUDGET=""; STAGE2_ARGS=(--epochs 1 --max_steps 2)
        EVAL_PER_FAMILY=1
        EVAL_ARGS=(--budgets 16 64 --epsilons 0.05 0.09 --search_budgets 32 64 --grid_images 4) ;;
    *) echo "quickstart.sh: error: unknown profile '$PROFILE' (allowed: short, full, smoke)" >&2; exit 2 ;;
esac
OUT="$(mkdir -p "${QUICKSTART_OUTPUT_DIR:-$OUT_DEFAULT}" && cd "${QUICKSTART_OUTPUT_DIR:-$OUT_DEFAULT}" && pwd)"
DEMO_DATA_DIR="${DEMO_DATA_DIR:-${DATA_DEFAULT:-$OUT/demo_data}}"
STATE_DIR="$OUT/.steps"
mkdir -p "$STATE_DIR"
CONFIG="$REPO_ROOT/engine/configs/quickstart_${PROFILE}.yaml"
BASE_CKPT="$OUT/base_tokenizer/patch_vae_demo.ckpt"
STAGE1_DIR="$OUT/stage1_latent_distillation"
STAGE2_DIR="$OUT/stage2_full_finetuning"
EVAL_DATA="$OUT/eval_data"
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"

# step NAME [--creates PATH] COMMAND...: run COMMAND unless its stamp says it already succeeded with the
# same command line (and PATH, when given, still exists).
STEP_NUMBER=0
# The short profile also evaluates the shipped demo model when the repository has it (see below).
EVAL_SHIPPED=0
[ "$PROFILE" = short ] && [ -f "$REPO_ROOT/kolmogorov_tokenizers/pretrained_models/demo/karl_demo.safetensors" ] &&
    EVAL_SHIPPED=1
case "$PROFILE" in
    full) STEPS_TOTAL=9 ;;
    short) STEPS_TOTAL=$((9 + 3 * EVAL_SHIPPED)) ;;
    *) STEPS_TOTAL=8 ;;
esac
# A stamp names the YAML's content too, so an edited profile (e.g. another decoder width) reruns its stages.
CONFIG_SHA="$(sha256sum "$CONFIG" | cut -c1-12)"
step() {
    local name="$1"; shift
    local creates=""
    if [ "${1:-}" = "--creates" ]; then creates="$2"; shift 2; fi
    local stamp="$STATE_DIR/$name.done" command_line="$*"
    [[ "$command_line" == *"$CONFIG"* ]] && command_line+="  # config sha256 $CONFIG_SHA"
    STEP_NUMBER=$((STEP_NUMBER + 1))
    if [ "${QUICKSTART_FORCE:-0}" != "1" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$command_line" ] &&
       { [ -z "$creates" ] || [ -e "$creates" ]; }; then
        echo "== [$STEP_NUMBER/$STEPS_TOTAL $name] already done (stamp $stamp)"
        return 0
    fi
    # A finished training step that must run again (changed command or settings, QUICKSTART_FORCE=1) starts
    # fresh: --resume auto would otherwise continue from, or stop at, the old run's last checkpoint. An
    # interrupted step has no stamp yet, so it still resumes.
    if [ -f "$stamp" ] && [ "$(basename "$creates")" = checkpoint-last.pth ] && [ -e "$creates" ]; then
        mv -f "$creates" "$creates.previous"
        echo "== [$STEP_NUMBER/$STEPS_TOTAL $name] earlier run's $creates moved to $creates.previous"
    fi
    echo "== [$STEP_NUMBER/$STEPS_TOTAL $name] $command_line"
    local start=$SECONDS
    "$@"
    echo "$command_line" > "$stamp"
    echo "== [$STEP_NUMBER/$STEPS_TOTAL $name] done in $((SECONDS - start)) s (total $((SECONDS - QUICKSTART_START)) s)"
}
QUICKSTART_START=$SECONDS
echo "quickstart: profile $PROFILE, output $OUT, data $DEMO_DATA_DIR, device $DEVICE, precision auto" \
     "(the training steps print what it resolves to and why)"
if [ -n "$STAGE1_BUDGET" ]; then
    echo "quickstart: time budgets: stage 0 ${STAGE0_BUDGET} s, stage 1 ${STAGE1_BUDGET} s (steps sized by this" \
         "machine's measured speed; QUICKSTART_STAGE0_S / QUICKSTART_STAGE1_S change them)"
fi

# The generator is idempotent too: with the same settings it leaves existing data untouched.
step demo_data --creates "$DEMO_DATA_DIR/metadata.csv" \
    "$VENV_PY" "$HERE/prepare_demo_data.py" --output_dir "$DEMO_DATA_DIR" "${DATA_ARGS[@]}"

step base_tokenizer --creates "$BASE_CKPT" \
    "$VENV_PY" "$HERE/base_tokenizer_pretrain.py" --model patch_vae_demo --data_path "$DEMO_DATA_DIR" \
    --output_dir "$OUT/base_tokenizer" --device "$DEVICE" --resume auto "${STAGE0_ARGS[@]}"

if [ -n "$STAGE1_BUDGET" ]; then
    # Stage 1's lr schedule (warmup + cosine over --epochs) must be fixed before its first step: a short
    # calibration run of the same command measures this machine's speed and picks the epochs that fit.
    SCHEDULE="$OUT/schedule_stage1.env"
    step schedule --creates "$SCHEDULE" \
        "$VENV_PY" -m engine.schedule_budget --budget_s "$STAGE1_BUDGET" --min_epochs "$STAGE1_MIN_EPOCHS" \
        --max_epochs "$STAGE1_MAX_EPOCHS" --write "$SCHEDULE" -- --stage latent_distillation --config "$CONFIG" \
        --data_path "$DEMO_DATA_DIR" --base_tokenizer_ckpt "$BASE_CKPT" --device "$DEVICE"
    EPOCHS=""; PRECISION=""
    # shellcheck disable=SC1090
    source "$SCHEDULE"
    [ -n "$EPOCHS" ] || { echo "quickstart.sh: error: $SCHEDULE does not set EPOCHS" >&2; exit 1; }
    STAGE1_ARGS=(--epochs "$EPOCHS")
    # train at the precision the calibration measured (its probe's choice), not a second probe's
    [ -n "$PRECISION" ] && STAGE1_ARGS+=(--precision "$PRECISION")
    echo "quickstart: stage 1 trains $EPOCHS epochs ($SCHEDULE: $(sed -n 2p "$SCHEDULE" | cut -c3-))"
fi

step latent_distillation --creates "$STAGE1_DIR/checkpoint-last.pth" \
    "$VENV_PY" -m engine.main_train --stage latent_distillation --config "$CONFIG" --data_path "$DEMO_DATA_DIR" \
    --base_tokenizer_ckpt "$BASE_CKPT" --output_dir "$STAGE1_DIR" --device "$DEVICE" --resume auto "${STAGE1_ARGS[@]}"

step full_finetuning --creates "$STAGE2_DIR/checkpoint-last.pth" \
    "$VENV_PY" -m engine.main_train --stage full_finetuning --config "$CONFIG" --data_path "$DEMO_DATA_DIR" \
    --base_tokenizer_ckpt "$BASE_CKPT" --finetune "$STAGE1_DIR/checkpoint-last.pth" --output_dir "$STAGE2_DIR" \
    --device "$DEVICE" --resume auto "${STAGE2_ARGS[@]}"

# The evaluation reads images in sorted path order, so --max_images would keep the first families only:
# evaluate a fixed per-family subset of the val split instead (copied with its metadata rows).
step eval_subset --creates "$EVAL_DATA/metadata.csv" \
    "$VENV_PY" "$HERE/quickstart_report.py" subset --data "$DEMO_DATA_DIR" --output "$EVAL_DATA" \
    --per_family "$EVAL_PER_FAMILY"

EVAL_DEVICE=(); [ "$DEVICE" != auto ] && EVAL_DEVICE=(--device "$DEVICE")
step evaluate --creates "$OUT/metrics.json" \
    "$VENV_PY" "$HERE/evaluate.py" --checkpoint "$STAGE2_DIR/checkpoint-last.pth" --data_path "$EVAL_DATA" \
    --output_dir "$OUT" --batch_size 32 "${EVAL_ARGS[@]}" "${EVAL_DEVICE[@]}"

# headroom_step NAME CKPT DIR: learned vs exactly fitted halting head (docs/EVALUATION.md, "Halting headroom") on the
# evaluated images, into DIR/halting_headroom.json, which the method checks read. Its command line does not
# name the model's weights, so a fresher DIR/metrics.json (another model evaluated) makes it run again.
headroom_step() {
    [ "$3/metrics.json" -nt "$3/halting_headroom.json" ] && rm -f "$3/halting_headroom.json"
    step "$1" --creates "$3/halting_headroom.json" \
        "$VENV_PY" -m research.halting_headroom --checkpoint "$2" --data_path "$EVAL_DATA" --batch_size 32 \
        --output "$3/halting_headroom.json" "${EVAL_DEVICE[@]}"
}
headroom_step halting_headroom "$STAGE2_DIR/checkpoint-last.pth" "$OUT"

# Cheap, so always rerun: prints whether the run shows the method's behaviour and adds it to report.md.
STEP_NUMBER=$((STEP_NUMBER + 1))
echo "== [$STEP_NUMBER/$STEPS_TOTAL method_checks]"
# The profile's precision setting, so the report's verdict names the precision that trained the model.
PRECISION_SETTING="$(sed -n 's/^precision: *\([a-z0-9]*\).*/\1/p' "$CONFIG")"
"$VENV_PY" "$HERE/quickstart_report.py" checks --eval_dir "$OUT" --precision "${PRECISION_SETTING:-auto}"

# The short run's model is smaller and trained for a third of the full profile's steps: when the repository
# ships the demo model (made by the full profile), evaluate it on the same images so this report's folder
# shows both side by side.
SHIPPED_OUT="$OUT/shipped_demo_model"
if [ "$EVAL_SHIPPED" = 1 ]; then
    step evaluate_shipped --creates "$SHIPPED_OUT/metrics.json" \
        "$VENV_PY" "$HERE/evaluate.py" --checkpoint demo --data_path "$EVAL_DATA" --output_dir "$SHIPPED_OUT" \
        --batch_size 32 "${EVAL_ARGS[@]}" "${EVAL_DEVICE[@]}"
    headroom_step halting_headroom_shipped demo "$SHIPPED_OUT"
    STEP_NUMBER=$((STEP_NUMBER + 1))
    echo "== [$STEP_NUMBER/$STEPS_TOTAL shipped_method_checks] the shipped demo model on the same images"
    "$VENV_PY" "$HERE/quickstart_report.py" checks --eval_dir "$SHIPPED_OUT" \
        --trained_by "the full quickstart profile (the shipped demo model, kolmogorov_tokenizers/pretrained_models/demo)"
fi

if [ "$PROFILE" = full ]; then
    step export_demo_model --creates "$OUT/demo_model/SHA256SUMS" \
        "$VENV_PY" "$HERE/quickstart_report.py" export --checkpoint "$STAGE2_DIR/checkpoint-last.pth" \
        --output "$OUT/demo_model"
    echo "demo model files: $OUT/demo_model (ship them: cp $OUT/demo_model/* $REPO_ROOT/kolmogorov_tokenizers/pretrained_models/demo/)"
fi

cat <<MSG

quickstart ($PROFILE) finished in $((SECONDS - QUICKSTART_START)) s.
  report:     $OUT/report.md  (plots in $OUT/plots/)
  metrics:    $OUT/metrics.json, per image: $OUT/per_image.csv
  checkpoint: $STAGE2_DIR/checkpoint-last.pth
Try it:  $VENV_DIR/bin/karl analyze $EVAL_DATA --checkpoint $STAGE2_DIR/checkpoint-last.pth
MSG
if [ "$EVAL_SHIPPED" = 1 ] && [ -f "$SHIPPED_OUT/report.md" ]; then
    echo "The shipped demo model on the same images: $SHIPPED_OUT/report.md"
fi
