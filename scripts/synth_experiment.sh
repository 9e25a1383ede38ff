#!/usr/bin/env bash
# Every training run behind results/synth_kd.md (issue #6) and results/NIAH.md (issue #7), on the
# `dass synth` corpus:
#   issue #6: AST teacher, DASS student without KD, DASS student with KD from that teacher
#   issue #7: AST with sinusoidal positional embeddings; DASS students with mean/first/middle/last pooling
# then the tables results/synth_kd_table.md and results/niah_models_table.md. Resumable: after an interruption run the same command again;
# finished runs are skipped and unfinished ones continue from their last checkpoint.
#
#   bash scripts/synth_experiment.sh [CORPUS_DIR]        # default corpus: data/synth
#   bash scripts/synth_experiment.sh CORPUS_DIR --lane a  # only one lane (see below)
#
# The runs go in two lanes that run side by side with one thread each (a 2-core CPU is used best by
# two single-threaded jobs); the KD student needs the finished teacher, so they share lane a.
# Wall time on the 2-core development machine: ~2 h (with NIAH runs beside it). Logs: runs/<run>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
corpus="data/synth"; lane="all"
while [ $# -gt 0 ]; do
  case "$1" in
    --lane) lane="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) corpus="$1"; shift ;;
  esac
done
if [ ! -f "$corpus/train.json" ]; then
  echo "no corpus at $corpus: build it with  dass synth $corpus --train 3000 --eval 600 --seed 0 --haystacks" >&2
  exit 2
fi
if [ "$(realpath "$corpus")" != "$(realpath -m data/synth)" ]; then mkdir -p data; ln -sfn "$(realpath "$corpus")" data/synth; fi
mkdir -p runs

train() {  # train OUTPUT_DIR RECIPE [OVERRIDES...]
  local out=$1; shift
  if [ -f "$out/final_metrics.json" ]; then echo "[$out] already finished"; return 0; fi
  local resume=()
  if [ -f "$out/checkpoints/last.pt" ]; then resume=(--resume); fi
  echo "[$out] $(date -u +%FT%TZ) start ${resume[*]}"
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \
    dass train "${resume[@]}" "$@" run.output_dir="$out" >>"$out.log" 2>&1
  echo "[$out] $(date -u +%FT%TZ) done"
}

lane_a() {
  train runs/synth_ast_tiny recipes/synth_ast_tiny.yaml
  train runs/synth_dass_tiny_kd recipes/synth_dass_tiny_kd.yaml
}
lane_b() {  # the pooling variants are fine-tuned from the no-KD student
  train runs/synth_dass_tiny recipes/synth_dass_tiny.yaml
  train runs/niah_ast_tiny_sincos recipes/niah_ast_tiny_sincos.yaml
  for pooling in mean first middle last; do
    train runs/niah_pool_$pooling recipes/niah_dass_tiny_pooling.yaml model.args.pooling=$pooling
  done
}

case "$lane" in
  a) lane_a ;;
  b) lane_b ;;
  all)
    lane_a & pid_a=$!
    lane_b & pid_b=$!
    wait "$pid_a"; wait "$pid_b"
    dass train-report teacher=runs/synth_ast_tiny student=runs/synth_dass_tiny \
      student_kd=runs/synth_dass_tiny_kd --out results/synth_kd_table.md --plot results/synth_kd_curves.png
    dass train-report ast_sincos=runs/niah_ast_tiny_sincos pool_mean=runs/niah_pool_mean \
      pool_first=runs/niah_pool_first pool_middle=runs/niah_pool_middle pool_last=runs/niah_pool_last \
      --out results/niah_models_table.md ;;
  *) echo "--lane must be a, b or all" >&2; exit 2 ;;
esac
