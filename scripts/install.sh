#!/usr/bin/env bash
# Install dass and everything it needs on a fresh Debian/Ubuntu machine (CPU).
#   bash scripts/install.sh          # the library + CLI
#   bash scripts/install.sh --test   # ... plus the test dependencies
# System packages: libsndfile (audio I/O), FluidSynth + the FluidR3 GM soundfont and espeak-ng
# (real instrument and speech sources for `dass synth`; dass works without them, with fewer classes),
# festival with three English voices (recorded diphones / HTS, ~11 MB: more voices for
# `dass synth --task keywords|speakers`; optional too);
# with --test also chromium + chromium-driver (the headless browser of the `dass serve` page test).
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
case "${1:-}" in
  --test) extras="[test]" ;;
  "") ;;
  *) echo "usage: bash scripts/install.sh [--test]" >&2; exit 2 ;;
esac

pkgs="libsndfile1 fluidsynth fluid-soundfont-gm espeak-ng festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
if [ -n "$extras" ]; then pkgs="$pkgs chromium chromium-driver"; fi
if command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    sudo=""
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    fi
    echo "dass install: apt-get install$missing"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null; }; then
      echo "dass install: warning: could not install$missing; 'dass synth' will use fewer sound sources" >&2
    fi
  fi
fi

PY="${PYTHON:-python3}"
# The pinned CPU build of PyTorch (GPU users: install the torch build you want first; it is kept).
"$PY" -c "import torch" >/dev/null 2>&1 || "$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -e ".$extras"
