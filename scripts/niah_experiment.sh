#!/usr/bin/env bash
# The NIAH runs behind results/NIAH.md (issue #7), on the `dass synth` eval split with the models that
# scripts/synth_experiment.sh trains. Each study writes its own folder under results/niah/ (niah.csv,
# the figures, summary.md); every `dass niah` call is resumable (rows already in the CSV are skipped).
#
#   bash scripts/niah_experiment.sh [STUDY...]    # STUDY: zeros ast noise pooling long (default: all)
#
#   zeros    DASS-tiny (no KD): zeros haystack, 10 s -> 5 min, five needle positions up to 50 s;
#            the KD student at the middle position up to 50 s
#   ast      the AST teachers (learned / sinusoidal positions), zeros haystack, 10 s -> 50 s, mid position
#   noise    DASS-tiny and the AST teacher, white and babble haystacks at 20 / 10 / 0 dB, 30 s
#   pooling  the mean / first / middle / last pooling students, zeros, 50 s, needle at start/middle/end
#   long     DASS-tiny to one hour (8 clips: one forward over an hour takes ~1.5 min on 1 core)
#
# The first 60 eval clips are the needles (mAP over 60 clips; each model is compared with its own 10 s
# score on the same clips). CPU cost on the 2-core development machine: ~1.5 h of one core in all.
# THREADS (default 1) sets the threads per `dass niah` call.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${THREADS:-1}"
data=data/synth/eval.json
out=results/niah
student=dass_tiny=runs/synth_dass_tiny/final
student_kd=dass_tiny_kd=runs/synth_dass_tiny_kd/final
ast=ast_learned=runs/synth_ast_tiny/final
ast_sincos=ast_sincos=runs/niah_ast_tiny_sincos/final

niah() {  # niah OUT_SUBDIR ARGS...
  local dir=$out/$1; shift
  mkdir -p "$dir"
  echo "[$dir] $(date -u +%FT%TZ) dass niah $*"
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads NUMBA_NUM_THREADS=$threads \
    dass niah --data "$data" --out "$dir" --no-plot "$@"
}

study_zeros() {
  niah zeros --model $student --haystack zeros --max-clips 60 \
    --lengths 10s,30s,50s --positions 0,0.25,0.5,0.75,1
  niah zeros --model $student --haystack zeros --max-clips 60 --lengths 5min --positions 0.5
  niah zeros --model $student_kd --haystack zeros --max-clips 60 --lengths 10s,30s,50s --positions 0.5
}
study_ast() {
  niah zeros --model $ast --model $ast_sincos --haystack zeros --max-clips 60 \
    --lengths 10s,30s,50s --positions 0.5
}
study_noise() {
  niah noise --model $student --model $ast --haystack white,babble --snr 20,10,0 --max-clips 60 \
    --lengths 30s --positions 0.5
}
study_pooling() {
  niah pooling --model mean=runs/niah_pool_mean/final --model first=runs/niah_pool_first/final \
    --model middle=runs/niah_pool_middle/final --model last=runs/niah_pool_last/final \
    --haystack zeros --max-clips 60 --lengths 50s --positions 0,0.5,1
}
study_long() {
  niah long --model $student --haystack zeros --max-clips 8 --lengths 5min,1h --positions 0.5
}

studies=("$@")
[ ${#studies[@]} -eq 0 ] && studies=(zeros ast noise pooling long)
for s in "${studies[@]}"; do
  case "$s" in
    zeros|ast|noise|pooling|long) "study_$s" ;;
    *) echo "unknown study $s (zeros ast noise pooling long)" >&2; exit 2 ;;
  esac
done
for dir in "$out"/*/; do
  [ -f "$dir/niah.csv" ] && dass niah-plot "$dir" >/dev/null && echo "plots: $dir"
done
