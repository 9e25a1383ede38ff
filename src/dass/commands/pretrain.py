"""``dass pretrain``: self-supervised masked-patch pretraining of an SSAMBA or SSAST encoder."""

from __future__ import annotations

import argparse

NAME = "pretrain"
HELP = "self-supervised pretraining of an SSAMBA / SSAST encoder on unlabelled audio (masked patches)"
DESCRIPTION = """\
Pretrain a patch encoder (ssamba_*, ssast_*, ast_*) on unlabelled audio with SSAMBA's / SSAST's
joint masked-patch objective: cluster masking of M patches per clip, InfoNCE within each clip plus
10 x the MSE on the raw normalised patches, from two independently masked passes; AdamW (lr 1e-4,
weight decay 5e-8, betas 0.95/0.999), the authors' warm-up, the learning rate halved when the
masked accuracy of a held-out set stops improving.

data.train is a directory of audio files (any format dass reads, searched recursively), a text
file with one path per line, or an AST JSON datafile (labels ignored). Clips are cut or padded to
data.max_length frames (1024 = 10.24 s by default).

Every config key can be overridden as section.key=value (values are YAML):

  dass pretrain recipes/pretrain_ssamba_nano.yaml
  dass pretrain none data.train=my_recordings/ data.max_length=512 model.name=ssamba_tiny
  dass pretrain recipes/pretrain_ssamba_nano.yaml masking.num_masked=60 run.output_dir=runs/try

Data-parallel on several GPUs (or CPU processes, gloo); optim.batch_size is the global batch:

  torchrun --nproc_per_node 4 -m dass.cli pretrain recipes/pretrain_ssamba_nano.yaml

Interrupted? Run the same command with --resume. The result, OUTPUT_DIR/final (and best), is a
folder dass train fine-tunes with model.init_from=OUTPUT_DIR/final; dass pretrain-convert writes
it in the authors' .pth layout (SSAMBA) and reads theirs.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML recipe (see recipes/pretrain_*.yaml); 'none' starts from the defaults")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides with dotted keys, e.g. optim.lr=3e-4 data.train=audio/",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoints/last.pt")


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from ..pretrain.config import load_pretrain_config
    from ..pretrain.loop import pretrain

    config = load_pretrain_config(None if args.config == "none" else args.config, args.overrides)
    try:
        pretrain(config, resume=args.resume)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0
