"""``dass niah-plot``: figures and a summary table from a ``dass niah`` output folder."""

from __future__ import annotations

import argparse

NAME = "niah-plot"
HELP = "draw the NIAH figures (mAP vs length, vs position, vs SNR) from a `dass niah` folder"
DESCRIPTION = """\
Draw the Audio Needle-In-A-Haystack figures from DIR/niah.csv (written by `dass niah --out DIR`)
into DIR, as PNG files, plus DIR/summary.md (a markdown table per haystack):

  niah_length.png        mAP vs haystack length (log x), one line per model (paper Fig. 1c / 4)
  niah_position.png      relative drop vs needle position, a line per model/pooling (Fig. 3)
  niah_snr.png           mAP vs SNR, a line per noise haystack and length (Fig. 5)
  niah_noise_length.png  mAP vs length for the noise haystacks, zeros for reference (Fig. 6)

Scores are averaged over needle positions; a figure whose data are absent is skipped.

Example:
  dass niah-plot niah/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", help="a `dass niah --out` folder holding niah.csv")


def run(args: argparse.Namespace) -> int:
    from ..niah.plots import make_plots

    for path in make_plots(args.directory):
        print(path)
    return 0
