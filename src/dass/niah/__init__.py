"""Audio Needle-In-A-Haystack (NIAH): how a classifier trained on 10 s clips holds up on long inputs.

See :mod:`dass.niah.haystack` (needle placement, haystack kinds), :mod:`dass.niah.runner`
(:func:`run_niah`, the CSV), :mod:`dass.niah.models` (loading any model) and :mod:`dass.niah.plots`.
"""

from .data import NiahEvalSet, load_eval_set
from .haystack import HaystackSpec, needle_start, parse_haystacks, place_needle
from .models import load_niah_model
from .plots import make_plots, summary_markdown
from .runner import CSV_COLUMNS, CSV_NAME, parse_length, parse_lengths, parse_positions, parse_snrs, run_niah

__all__ = [
    "CSV_COLUMNS", "CSV_NAME", "HaystackSpec", "NiahEvalSet", "load_eval_set", "load_niah_model",
    "needle_start", "parse_haystacks", "parse_length", "parse_lengths", "parse_positions", "parse_snrs",
    "make_plots", "place_needle", "run_niah", "summary_markdown",
]
