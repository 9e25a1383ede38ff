"""``dass train-report``: compare finished training runs (table + learning curves)."""

from __future__ import annotations

import argparse

NAME = "train-report"
HELP = "compare finished `dass train` runs: markdown table of final mAP / cost, learning-curve plot"
DESCRIPTION = """\
Read each run folder's final_metrics.json and metrics.csv and print a markdown table: model,
parameters, number of seeds, final mAP / mAUC / d' (mean ± half-range over seeds), best epoch mAP,
optimiser steps and training time. --plot also draws eval mAP per epoch for every run.

Several folders after one label are seeds of the same recipe:

  dass train-report teacher=runs/synth_ast_tiny \\
      student=runs/synth_dass_tiny,runs/synth_dass_tiny_s1 student_kd=runs/synth_dass_tiny_kd \\
      --out results/synth_kd_table.md --plot results/synth_kd_curves.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="[LABEL=]DIR[,DIR...]", help="finished run folders")
    parser.add_argument("--out", metavar="MD", default=None, help="also write the table to this file")
    parser.add_argument("--plot", metavar="PNG", default=None, help="draw the learning curves here")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..train.report import parse_groups, plot_curves, summarize

    groups = parse_groups(args.runs)
    table = summarize(groups)
    print(table, end="")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(table)
        tmp.replace(out)
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        print(plot_curves(groups, args.plot))
    return 0
