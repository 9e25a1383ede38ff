"""``dass convert``: convert a checkpoint between the layouts dass reads."""

from __future__ import annotations

import argparse

NAME = "convert"
HELP = "convert a checkpoint (authors' .pth, Hugging Face DASS, official AST) to a dass folder"
DESCRIPTION = """\
Convert a checkpoint into dass's own format (a folder with config.json + model.safetensors, the
fastest and safest to load), or export a DASS model to the Hugging Face or the authors' layout.

SRC can be:
  - the authors' training checkpoint (.pth with module.v.* keys; depths, dims and the number of
    classes are read off the tensor shapes),
  - a Hugging Face DASS folder (config.json + model.safetensors / pytorch_model.bin) or hub id,
  - the official AST AudioSet checkpoint (module.v.cls_token, ...),
  - a dass folder.
Pickled files are read with torch.load(weights_only=True).

examples:
  dass convert DASS_small.pth dass_small/ --labels class_labels_indices.csv
  dass convert saurabhati/DASS_small_AudioSet_50.1 dass_small/
  dass convert dass_small/ dass_small_hf/ --format hf
  dass convert dass_small/ DASS_small_authors.pth --format authors
  dass convert audioset_10_10_0.4593.pth ast_base/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="checkpoint file, folder or Hugging Face hub id")
    parser.add_argument("dst", metavar="DST", help="output folder (or .pth file for --format authors)")
    parser.add_argument("--format", choices=("dass", "hf", "authors"), default="dass",
                        help="output layout: dass (default), hf (Hugging Face DASS folder) or authors (.pth)")
    parser.add_argument("--labels", metavar="CSV",
                        help="store class names from a class_labels_indices.csv (index,mid,display_name)")


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import convert, from_pretrained
    from .tag import read_label_names

    labels = read_label_names(args.labels) if args.labels else None
    dst = convert(args.src, args.dst, format=args.format, labels=labels)
    model = from_pretrained(dst)
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    shape = f"depths {list(config.depths)}, dims {list(config.dims)}, " if hasattr(config, "depths") else ""
    named = "with class names" if getattr(config, "labels", None) else "without class names"
    print(f"wrote {dst} ({args.format} format): {model.model_type}, {shape}"
          f"{config.num_classes} classes {named}, {n_params / 1e6:.2f} M parameters")
    return 0
