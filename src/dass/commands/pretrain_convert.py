"""``dass pretrain-convert``: self-supervised checkpoints between our folder and the authors' ``.pth``."""

from __future__ import annotations

import argparse

NAME = "pretrain-convert"
HELP = "convert a self-supervised SSAMBA checkpoint: our folder <-> the authors' .pth layout"
DESCRIPTION = """\
Convert a self-supervised (pretraining) checkpoint between the two layouts, in the direction the
arguments say:

  dass pretrain-convert runs/pretrain/final ssamba_ours.pth     # ours -> the authors' layout
  dass pretrain-convert ssamba_tiny_400.pth runs/theirs          # the authors' -> our folder

The authors' layout is DataParallel(AMBAModel).state_dict(): module.p_input_fdim/tdim,
module.mask_embed, module.v.* (the encoder), module.cpredlayer.*, module.gpredlayer.*; their
fine-tuning code loads it. Our folder (config.json, model.safetensors, ssl_heads.safetensors) is what
dass pretrain writes and what dass train fine-tunes with model.init_from. The weights are copied
unchanged (the position table keeps the pretraining grid). SSAMBA encoders only.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="our self-supervised folder, or the authors' .pth file")
    parser.add_argument("dst", help="a .pth file (from our folder) or a folder (from a .pth)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..pretrain.checkpoint import export_authors, import_authors

    src = Path(args.src)
    if src.is_dir():
        out = export_authors(src, args.dst)
    elif src.is_file():
        if Path(args.dst).suffix in (".pth", ".pt"):
            raise ConfigError(f"{args.dst}: converting a .pth file writes our folder; give a folder name")
        out = import_authors(src, args.dst)
    else:
        raise ConfigError(f"{src}: no such checkpoint file or folder")
    print(f"wrote {out}")
    return 0
