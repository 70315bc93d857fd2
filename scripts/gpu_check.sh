#!/usr/bin/env bash
# The GPU check: what fsa can only show on a CUDA device, in one short run. It needs fsa's dependencies
# importable by $PYTHON, and no weights: the bench uses random weights in SD 1.4's, CLIP RN50's and
# ViT-H/14's shapes (their cost does not depend on the values).
#
#   scripts/gpu_check.sh [OUT_DIR]            # about 6.5 minutes on an H200; default outputs/gpu_check
#   scripts/gpu_check.sh --compile [OUT_DIR]  # the torch.compile'd variants alone (minutes of compiling each)
#   scripts/gpu_check.sh --gradients [OUT_DIR] # stages 1, 2 and the schedules and gradients (about 5.5 min)
#   scripts/gpu_check.sh --profile [OUT_DIR]   # the iteration part by part, then whole schedules at batch 3
#
# Default stages, each under its own time limit so that a slow one cannot starve the rest:
#   1. the `gpu` tests (speed options on CUDA against the plain CUDA path);
#   2. the main job (`fsa`, the embedded digits proof) on CUDA;
#   3. bench.py --compare at 512 px for CLIP RN50 and ViT-H/14: faithful fp32, bf16, channels_last,
#      VAE checkpointing, and all of them together (fast_eager: speed=fast without compile);
#   4. peak memory at the presets' batch of 3 at 512 px (faithful, fast_eager, lean = + UNet checkpointing);
#   5. scripts/gpu_figures.py: the goals as ratios measured in this run -> gpu_figures.json / .md.
# --gradients runs these in place of stages 3 and 4 (all of them would not fit one 10-minute device call):
#   the paper schedule (sampler=ddpm guidance=paper) and `sampler=fast guidance=fast` at 512 px with
#   CLIP RN50: each schedule's guided iteration timed, times its iterations: time per sample; and the
#   cheaper gradients (guidance.gradient=z0_hat, guidance.backward_steps) alone, beside the paper's.
# --profile runs scripts/profile_iteration.py at 512 px (CLIP RN50 at batch 1 and 3, ViT-H/14 at batch
#   1: each part's GPU time, kernels and the host synchronisations per iteration, the top kernels), then
#   the paper schedule and `fast` at the presets' batch of 3 (time per image), for docs/measurements/.
# --compile instead benchmarks `fast` (speed=fast, torch.compile included) and `compile` alone: measured
# on an H200 (16 CPU cores), compiling SD's UNet, VAE and an extractor forward and backward took more
# than two minutes per process, which does not fit beside the rest in one short run.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=default
case "${1:-}" in --compile | --gradients | --profile) mode=${1#--}; shift ;; esac
out=${1:-outputs/gpu_check}
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
peak=${PEAK_TFLOPS:-989}  # H100/H200 SXM dense bf16 peak; only scales the "fraction of peak" column
mkdir -p "$out"
scratch=$(mktemp -d)
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

stage() {  # stage NAME LIMIT_S COMMAND...: run it under a time limit, report its exit code and time
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  echo "=== $name (limit ${limit} s)"
  timeout -k 10 "$limit" "$@"
  rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
}

bench=("$py" scripts/bench.py --image-size 512 --peak-tflops "$peak")
stage environment 30 "$py" -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, \
torch.cuda.get_device_name(0), f'{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB')"
gradients() {
  stage schedules_clip_rn50 70 "${bench[@]}" --extractor clip_rn50 --compare paper_schedule fast_schedule \
    --json "$out/schedules_clip_rn50.json"
  stage gradients_clip_rn50 150 "${bench[@]}" --extractor clip_rn50 \
    --compare faithful z0_hat backward_1 backward_3 z0_hat_backward_1 --json "$out/gradients_clip_rn50.json"
}
main_job() {
  stage gpu_tests 110 "$py" -m pytest -q -p no:cacheprovider -m gpu tests/test_speed.py
  stage main_job_on_cuda 60 "$py" -m fsa device=cuda logger.mode=disabled progress=false \
    "hydra.run.dir=$scratch/digits"
  cp "$scratch/digits/summary.json" "$out/digits_cuda_summary.json" 2>/dev/null
}
if [ "$mode" = compile ]; then
  stage compile_clip_rn50 280 "${bench[@]}" --extractor clip_rn50 --compare faithful fast compile \
    --json "$out/compile_clip_rn50.json"
  stage compile_vit_h14 200 "${bench[@]}" --extractor vit_h14 --compare faithful fast \
    --json "$out/compile_vit_h14.json"
elif [ "$mode" = profile ]; then
  profile=("$py" scripts/profile_iteration.py --image-size 512)
  stage profile_clip_rn50 90 "${profile[@]}" --extractor clip_rn50 --out "$out/profile_clip_rn50"
  stage profile_clip_rn50_batch3 90 "${profile[@]}" --extractor clip_rn50 --batch 3 --out "$out/profile_clip_rn50_batch3"
  stage profile_vit_h14 100 "${profile[@]}" --extractor vit_h14 --out "$out/profile_vit_h14"
  stage schedules_batch3 120 "${bench[@]}" --extractor clip_rn50 --batch 3 --compare paper_schedule fast_schedule \
    --json "$out/schedules_clip_rn50_batch3.json"
elif [ "$mode" = gradients ]; then
  main_job
  gradients
else
  main_job
  variants=(faithful bf16 channels_last vae_checkpointing fast_eager)
  stage bench_clip_rn50 110 "${bench[@]}" --extractor clip_rn50 --compare "${variants[@]}" \
    --json "$out/bench_clip_rn50.json"
  stage bench_vit_h14 120 "${bench[@]}" --extractor vit_h14 --compare "${variants[@]}" \
    --json "$out/bench_vit_h14.json"
  stage batch3_clip_rn50 70 "${bench[@]}" --extractor clip_rn50 --batch 3 --compare faithful fast_eager lean \
    --json "$out/batch3_clip_rn50.json"
  stage batch3_vit_h14 50 "${bench[@]}" --extractor vit_h14 --batch 3 --compare fast_eager lean \
    --json "$out/batch3_vit_h14.json"
fi
rm -f "$out"/*.md  # the tables are rebuilt, with the goals, in one file
stage figures 20 "$py" scripts/gpu_figures.py "$out"
rm -rf "$scratch"
