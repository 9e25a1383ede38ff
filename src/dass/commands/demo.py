"""``dass demo``: the paper in miniature on a fresh offline machine (see :mod:`dass.demo`)."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "the paper in miniature: synth corpus -> AST teacher -> distilled DASS -> NIAH, offline on a CPU"
DESCRIPTION = """\
The paper in miniature, offline, with built-in defaults (no arguments needed):

  1. corpus   builds a small labelled corpus of 10 s clips with `dass synth` (160 train, 80 eval;
              procedural tones and noises plus espeak-ng speech and babble: 19 AudioSet classes;
              the procedural ones alone when espeak-ng is not installed);
  2. teacher  trains a tiny AST (2 transformer blocks, 16x16 patches, learned positional
              embeddings) on it;
  3. student  trains a tiny DASS (VMamba state-space blocks) distilled from the teacher
              (loss = 0.5 BCE + 0.5 KL to the teacher's logits);
  4. NIAH     hides eval clips (the needles) at the start and at the end of longer inputs
              (zeros, and white noise at 10 dB SNR) and measures how much mAP each model loses:
              the transformer up to 1 min (its attention cost grows with the square of the
              length), DASS up to 10 min.

Writes OUT/summary.md (the results table, also printed at the end), OUT/summary.json, and
OUT/niah/ (niah.csv, niah_length.png, niah_position.png, niah_noise_length.png, summary.md).
Progress bars show each stage. Budget: about 15 min on an idle 2-core CPU (--quick: about 2 min,
fewer clips and epochs, NIAH up to 1 min); the numbers are a toy version of the paper's, not a replica.

Interrupted? Run the same command again: finished stages are skipped (the corpus renders only
missing clips, a trained model is not trained again, a training resumes from its last checkpoint,
NIAH skips the rows already in niah.csv). A folder made with other options is refused.

examples:
  dass demo                          # ./dass_demo, about 15 min on 2 cores
  dass demo --quick --out /tmp/demo  # about 2 min
  dass demo --device cuda            # train and run NIAH on a GPU
  dass demo --skip-niah              # stop after training
  dass demo --baseline               # also a DASS trained without the teacher (KD vs no KD)
"""

DEFAULT_OUT = "dass_demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help="output folder (created; an existing demo folder is resumed) (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a ~2 min version: fewer clips and epochs, NIAH up to 1 min")
    parser.add_argument("--tiny-test", action="store_true", help=argparse.SUPPRESS)  # the test suite's seconds-long run
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus, the training and the noise (default 0)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to train and run NIAH (default: auto = CUDA when available)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch and corpus worker processes (default: all cores)")
    parser.add_argument("--skip-niah", action="store_true", help="stop after training the two models")
    parser.add_argument("--baseline", action="store_true",
                        help="also train the student without distillation, to see what KD adds (~+30%% time)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import sys
    import warnings

    from ..demo import DemoConfig, run_demo
    from ..errors import ConfigError

    if args.quick and args.tiny_test:
        raise ConfigError("--quick and --tiny-test are different budgets: choose one")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    config = DemoConfig.preset("tiny-test" if args.tiny_test else "quick" if args.quick else "default")
    config.seed = args.seed
    config.baseline = args.baseline

    def show(message, *_args, **_kwargs) -> None:  # "dass synth: skipping ..." without a source line
        print(message, file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        summary = run_demo(args.out, config, device=args.device, threads=args.threads, skip_niah=args.skip_niah,
                           progress=not args.quiet)
    paths = summary["paths"]
    print()
    print(summary["summary_markdown"], end="")
    print()
    print(f"summary: {paths['summary_md']} (numbers: {paths['summary_json']})")
    if paths["niah_csv"]:
        print(f"NIAH results: {paths['niah_csv']}")
        for figure in paths["figures"]:
            print(f"plot: {figure}")
    print(f"models: {paths['teacher']} (teacher), {paths['student']} (student); "
          f"try: dass tag {paths['example_clip']} --model {paths['student']}")
    return 0
