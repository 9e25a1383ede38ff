"""``dass niah``: the Audio Needle-In-A-Haystack benchmark."""

from __future__ import annotations

import argparse

NAME = "niah"
HELP = "Audio Needle-In-A-Haystack: how classifiers hold up when a 10 s clip hides in a long recording"
DESCRIPTION = """\
Audio Needle-In-A-Haystack (NIAH, the DASS paper's duration-robustness benchmark).

Each evaluation clip (the needle: its normalised 10 s fbank, 1024 frames) is hidden unchanged in a
haystack of L frames at relative position p (start frame round(p * (L - 1024))); every model tags
the whole haystack and the mAP over the eval set is compared with the needle alone (10 s).
One row per (model, haystack, SNR, length, position) goes to OUT/niah.csv: mAP, mAUC, rel_drop
(vs 10 s), seconds (forward passes), peak_mem_mb (CUDA max allocated / process peak RSS on CPU)
and status (ok, oom, max positions exceeded, or the error). Rerunning with the same --out skips
the rows already there; a model that fails a length is not run at longer lengths.

Models (--model, repeatable, optionally LABEL=SPEC):
  dass_small                      a registered name (random weights, head sized for the eval set;
                                  for timing and smoke tests)
  ast_tiny@teacher.safetensors    a registered name + a state dict
  runs/dass_tiny                  a dass checkpoint folder, HF DASS folder / hub id, .pth (from_pretrained)
  hf:path/to/ast-finetuned        a transformers AutoModelForAudioClassification folder (fbank input;
                                  fixed positions: longer inputs get "max positions exceeded")
  hf-ast:path/to/ast-finetuned    a transformers AST as dass's AST (learned positions interpolated)
  pool-mean=runs/dass_mean        any of the above, labelled "pool-mean" in the CSV

Lengths: 10s, 30s, 5min, 1h, 2.5h (100 frames per second) or frames (3000f, 3000). 10 s means the
needle alone, 1024 frames; it is always evaluated (the reference for rel_drop).

Haystacks: zeros (zeros in the normalised feature domain, the paper's padding), silence (a silent
waveform -> fbank -> normalise), white, pink (Gaussian noise) and babble[:PATH] (recordings: a file,
a folder or a glob; plain "babble" takes DATA's folder/haystacks/babble, as `dass synth --haystacks`
writes it), at each --snr relative to the needle's RMS; noise is fbank'ed in chunks of <= 400 s.

Examples:
  dass niah --model runs/dass_tiny --model ast=runs/ast_tiny --data synth/eval.json \\
      --lengths 10s,30s,50s,5min,1h --positions 0,0.25,0.5,0.75,1 --haystack zeros --out niah/
  dass niah --model runs/dass_tiny --data synth/eval.json --lengths 10s,1min,5min \\
      --haystack white,babble --snr 20,10,0 --max-clips 100 --out niah/ --device cuda
  dass niah-plot niah/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, metavar="[LABEL=]SPEC",
                        help="model to evaluate (repeatable); see above")
    parser.add_argument("--data", required=True, metavar="JSON", help="AST JSON datafile of the eval clips")
    parser.add_argument("--labels", metavar="CSV", default=None,
                        help="class_labels_indices.csv (default: the one beside the datafile)")
    parser.add_argument("--lengths", default="10s,30s,50s,5min", help="comma list (default: %(default)s)")
    parser.add_argument("--positions", default="0,0.25,0.5,0.75,1", help="comma list in [0, 1] (default: %(default)s)")
    parser.add_argument("--haystack", action="append", metavar="KIND",
                        help="zeros, silence, white, pink, babble[:PATH]; repeatable or a comma list (default: zeros)")
    parser.add_argument("--snr", default="20,10,0", help="SNRs in dB for noise haystacks (default: %(default)s)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (niah.csv; resumable)")
    parser.add_argument("--max-clips", type=int, default=None, metavar="N", help="use the first N clips")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="clips per forward pass at 10 s; batch * 1024 // L at length L (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default: %(default)s)")
    parser.add_argument("--norm-mean", type=float, default=None,
                        help="fbank mean for normalisation (default: AudioSet's -4.2677393)")
    parser.add_argument("--norm-std", type=float, default=None,
                        help="fbank std for normalisation (default: AudioSet's 4.5689974)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the figures at the end")


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from ..errors import ConfigError
    from ..niah import load_eval_set, load_niah_model, parse_haystacks, parse_lengths, parse_positions, parse_snrs
    from ..niah.runner import run_niah

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"unknown --device {device!r}: {e}") from None
    lengths = parse_lengths(args.lengths)
    positions = parse_positions(args.positions)
    from pathlib import Path

    haystacks = parse_haystacks(args.haystack or ["zeros"], default_babble=Path(args.data).parent / "haystacks" / "babble")
    snrs = parse_snrs(args.snr) if any(h.uses_snr for h in haystacks) else []
    eval_set = load_eval_set(args.data, args.labels, args.max_clips, args.norm_mean, args.norm_std)
    models = {}
    for spec in args.model:
        label, model = load_niah_model(spec, device, num_classes=eval_set.num_classes)
        if label in models:
            raise ConfigError(f"two models labelled {label!r}; name them with --model LABEL=SPEC")
        models[label] = model
    print(f"dass niah: {len(models)} model(s), {len(eval_set)} clips, lengths {lengths} frames, "
          f"haystacks {[h.name for h in haystacks]} on {device}", file=sys.stderr)
    csv_path = run_niah(models, eval_set, lengths, positions, haystacks, snrs, args.out,
                        batch_size=args.batch_size, device=device, seed=args.seed,
                        mean=args.norm_mean, std=args.norm_std)
    print(csv_path)
    if not args.no_plot:
        from ..niah.plots import make_plots

        for path in make_plots(args.out):
            print(path)
    return 0
