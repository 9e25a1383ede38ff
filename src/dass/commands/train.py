"""``dass train``: train a tagger (teacher or student, with or without knowledge distillation)."""

from __future__ import annotations

import argparse

NAME = "train"
HELP = "train or distil an audio tagger from a YAML recipe (AST recipe, KD, DDP, resumable)"
DESCRIPTION = """\
Train an audio tagger (DASS, AST, any model dass knows) on AST-format JSON datafiles with the
AST/DASS recipe: Adam (betas 0.95/0.999, weight decay 5e-7), linear warm-up, step decay, mixup,
SpecAugment, class-balanced sampling, weight averaging of epoch checkpoints, mixed precision on GPU.
Optional knowledge distillation from a live teacher, an ensemble, or cached teacher logits.
Each epoch reports mAP / mAUC / d' on the eval datafile (metrics.csv, TensorBoard).

Every config key can be overridden as section.key=value (values are YAML):

  dass train recipes/synth_dass_tiny_kd.yaml
  dass train recipes/synth_ast_tiny.yaml optim.epochs=2 run.output_dir=runs/try
  dass train recipes/synth_dass_tiny.yaml model.args.drop_path_rate=0.05 data.cache_dir=null
  dass train recipes/synth_dass_tiny_kd.yaml kd.teachers=[runs/ast_tiny/final] kd.kind=bce

Data-parallel on several GPUs (or CPU processes, gloo); optim.batch_size is the global batch:

  torchrun --nproc_per_node 4 -m dass.cli train recipes/synth_dass_tiny.yaml

Interrupted? Run the same command with --resume: training continues from the last checkpoint
(written every run.checkpoint_every steps and after each epoch) exactly where it stopped.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML recipe (see recipes/); 'none' starts from the defaults")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides with dotted keys, e.g. optim.lr=3e-4 run.output_dir=runs/x")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/checkpoints/last.pt")


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from ..train.config import load_config
    from ..train.trainer import train

    config = load_config(None if args.config == "none" else args.config, args.overrides)
    try:
        train(config, resume=args.resume)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0
