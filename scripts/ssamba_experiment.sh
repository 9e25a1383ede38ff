#!/usr/bin/env bash
# The experiment of issue 18: SSAMBA-nano vs SSAST-nano (equal sizes within 4 %), self-supervised
# pretraining on an unlabelled pool vs training from scratch, fine-tuned on keyword spotting, speaker
# identification and tagging, all built offline by `dass synth --task ...`; writes results/ssamba.md
# and results/ssamba_pretraining.png. Fixed seeds; resumable: after an interruption run the same
# command again (finished runs are skipped, unfinished ones continue from their last checkpoint).
#
#   bash scripts/ssamba_experiment.sh             # the full experiment (estimate: results/ssamba.md)
#   bash scripts/ssamba_experiment.sh --smoke     # tiny sizes, a few minutes: checks the pipeline
#   options: --jobs N (single-threaded jobs side by side; default 2 = one per core of the 2-core
#            machine), --seeds "0 1" (fine-tuning seeds; the pretraining seed is 0)
#
# Stages: 1. data (pool, keywords, speakers, tagging) and their fbank statistics; 2. two pretraining
# runs; 3. 2 models x 3 tasks x {pretrained, scratch} x seeds fine-tuning runs, each scored on its
# task's test split by `dass evaluate`; 4. the report. Stage 2 and 3 jobs are shared by --jobs
# workers (a pretrained fine-tuning run waits for its pretraining). Logs: RUNS/<run>.log; CPU time
# per run: RUNS/<run>.time (wall, user, system seconds of every attempt).
# Set DASS to the command that runs dass (default: python3 -m dass.cli).
#
# Cost estimate of the full run (from per-step times measured on the 2-core development machine while
# six other sessions loaded it, one thread per job; dass.ops.selective_scan at N = 16 as of this
# commit): data ~15 CPU-min; pretraining SSAMBA-nano ~45, SSAST-nano ~9 (730 steps of batch 16);
# fine-tuning SSAMBA-nano ~165, SSAST-nano ~35 (12 runs each); ~4.5 CPU-hours in all, ~2.3 h wall
# with --jobs 2. A quiet machine, or the fast N = 16 scan, makes the SSAMBA part much cheaper.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="full"; jobs=2; seeds="0 1"
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) mode="smoke"; shift ;;
    --jobs) jobs="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
DASS=${DASS:-"python3 -m dass.cli"}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONWARNINGS=ignore

if [ "$mode" = smoke ]; then
  data=data/ssamba_smoke; runs=runs/ssamba_smoke; report=results/ssamba_smoke.md
  pool_args=(--clips 96 --seconds 2); kws_args=(--train 70 --valid 35 --test 35)
  spk_args=(--speakers 4 --utterances 4,1,2); tag_args=(--train 16 --eval 6 --seconds 3)
  # tiny models and a handful of steps
  ssamba_args=(model.args.embed_dim=32 model.args.depth=2); ssast_args=(model.args.embed_dim=32 model.args.depth=1 model.args.num_heads=2)
  pre_steps=(optim.epochs=2 optim.warmup_steps=4 optim.warmup_every=1 run.eval_every=4 run.log_every=1 data.valid_clips=16
             run.checkpoint_every=4)
  ft_steps=(optim.epochs=1 optim.warmup_steps=2 run.checkpoint_every=4)
else
  data=data/ssamba; runs=runs/ssamba; report=results/ssamba.md
  pool_args=(--clips 2400 --seconds 2); kws_args=(--train 2100 --valid 350 --test 700)
  spk_args=(--speakers 24 --utterances 20,4,8); tag_args=(--train 400 --eval 100 --seconds 3)
  ssamba_args=(); ssast_args=(); pre_steps=(); ft_steps=()
fi
mkdir -p "$runs" "$data" results
paths=(data.cache_dir="$data/feature_cache")

# ------------------------------------------------------------------------------------------ 1. data
echo "[data] $(date -u +%FT%TZ) building the tasks in $data"
synth_log="$runs/data.log"
timed() { /usr/bin/time -f "%e %U %S" -a -o "$runs/data.time" "$@"; }  # CPU time of the data stage
timed $DASS synth "$data/pool" --task unlabelled "${pool_args[@]}" --seed 0 --workers "$jobs" --quiet >>"$synth_log" 2>&1
timed $DASS synth "$data/keywords" --task keywords "${kws_args[@]}" --seed 0 --workers "$jobs" --quiet >>"$synth_log" 2>&1
timed $DASS synth "$data/speakers" --task speakers "${spk_args[@]}" --seed 0 --workers "$jobs" --quiet >>"$synth_log" 2>&1
timed $DASS synth "$data/tagging" --task tagging "${tag_args[@]}" --sources procedural,espeak --seed 0 --workers "$jobs" \
  --quiet >>"$synth_log" 2>&1
norm() {  # norm DATAFILE FRAMES -> "data.mean=... data.std=..."
  local stats="${1%.json}.norm_stats.json"
  [ -f "$stats" ] || timed $DASS norm-stats "$1" --max-length "$2" --out "$stats" --quiet >>"$synth_log" 2>&1
  python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"data.mean={s['mean']:.7g} data.std={s['std']:.7g}\")" "$stats"
}
read -r -a pool_norm <<<"$(norm "$data/pool/unlabelled.json" 200)"
read -r -a kws_norm <<<"$(norm "$data/keywords/train.json" 100)"
read -r -a spk_norm <<<"$(norm "$data/speakers/train.json" 300)"
read -r -a tag_norm <<<"$(norm "$data/tagging/train.json" 300)"
echo "[data] $(date -u +%FT%TZ) done"

# ------------------------------------------------------------------------------- 2.-3. the runs
run() {  # run OUT COMMAND RECIPE [OVERRIDES...]: train/pretrain (resuming), timed
  local out=$1 command=$2; shift 2
  if [ -f "$out/final_metrics.json" ]; then return 0; fi
  local resume=()
  if [ -f "$out/checkpoints/last.pt" ]; then resume=(--resume); fi
  echo "[$out] $(date -u +%FT%TZ) start ${resume[*]}"
  /usr/bin/time -f "%e %U %S" -a -o "$out.time" $DASS "$command" "${resume[@]}" "$@" run.output_dir="$out" \
    run.progress=false >>"$out.log" 2>&1
  echo "[$out] $(date -u +%FT%TZ) done"
}
score() {  # score OUT TEST_JSON TASK FRAMES NORM...: dass evaluate on the test split
  local out=$1 test=$2 task=$3 frames=$4 mean=${5#data.mean=} std=${6#data.std=}
  if [ -f "$out/test_metrics.json" ]; then return 0; fi
  local confusion=()
  if [ "$task" = singlelabel ]; then confusion=(--confusion "$out/test_confusion.png"); fi
  /usr/bin/time -f "%e %U %S" -a -o "$out.time" $DASS evaluate "$out/final" "$test" --task "$task" \
    --max-length "$frames" --mean "$mean" --std "$std" --out "$out/test_metrics.json" "${confusion[@]}" >>"$out.log" 2>&1
}
model_args() {  # the smoke sizes for a model name
  if [ "$1" = ssamba_nano ]; then echo "${ssamba_args[@]}"; else echo "${ssast_args[@]}"; fi
}

declare -a job_names job_deps job_cmds
add_job() { job_names+=("$1"); job_deps+=("$2"); job_cmds+=("$3"); }
for model in ssamba_nano ssast_nano; do
  add_job "pretrain_$model" "" \
    "run $runs/pretrain_$model pretrain recipes/pretrain_$model.yaml ${pool_norm[*]} data.train=$data/pool/unlabelled.json ${paths[*]} $(model_args $model) ${pre_steps[*]}"
done
for init in scratch pretrained; do
  for seed in $seeds; do
    for task in keywords speakers tagging; do
      for model in ssamba_nano ssast_nano; do
        case $task in
          keywords) frames=100; kind=singlelabel; norm_args="${kws_norm[*]}" ;;
          speakers) frames=300; kind=singlelabel; norm_args="${spk_norm[*]}" ;;
          tagging) frames=300; kind=multilabel; norm_args="${tag_norm[*]}" ;;
        esac
        out="$runs/${task}_${model}_${init}_s$seed"
        if [ "$init" = pretrained ]; then
          start="model.init_from=$runs/pretrain_$model/final"; dep="$runs/pretrain_$model/final_metrics.json"
        else
          start="model.name=$model $(model_args $model)"; dep=""
        fi
        add_job "$(basename "$out")" "$dep" \
          "run $out train recipes/finetune_$task.yaml $norm_args $start run.seed=$seed data.train=$data/$task/train.json data.eval=$data/$task/valid.json ${paths[*]} ${ft_steps[*]} && score $out $data/$task/test.json $kind $frames $norm_args"
      done
    done
  done
done

claims="$runs/.claims.$$"
mkdir -p "$claims"
trap 'rm -rf "$claims"' EXIT
worker() {
  local i
  for i in "${!job_names[@]}"; do
    mkdir "$claims/${job_names[$i]}" 2>/dev/null || continue  # another worker has it
    local dep="${job_deps[$i]}"
    while [ -n "$dep" ] && [ ! -f "$dep" ]; do
      if [ -e "$claims/failed_$(basename "$(dirname "$dep")")" ]; then
        echo "[${job_names[$i]}] skipped: $(dirname "$dep") failed" >&2; continue 2
      fi
      sleep 15
    done
    if ! eval "${job_cmds[$i]}"; then
      echo "[${job_names[$i]}] FAILED (see $runs/${job_names[$i]}.log)" >&2
      touch "$claims/failed_${job_names[$i]}"
    fi
  done
}
pids=()
for _ in $(seq "$jobs"); do worker & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if ls "$claims"/failed_* >/dev/null 2>&1; then status=1; fi

# ------------------------------------------------------------------------------------- 4. report
python3 scripts/ssamba_report.py --runs "$runs" --seeds "$seeds" --out "$report" \
  --plot "${report%.md}_pretraining.png" --mode "$mode"
echo "report: $report"
exit $status
