"""``dass teacher-logits``: run a teacher once over a datafile and cache its logits for KD."""

from __future__ import annotations

import argparse

NAME = "teacher-logits"
HELP = "compute a teacher's logits for every clip of a datafile (for distillation with cached logits)"
DESCRIPTION = """\
Run a teacher model over every clip of an AST-format JSON datafile and store its logits, keyed by
the clip's absolute audio path, in a .safetensors (tensor "logits" + metadata "wav_paths") or .npz
file (written atomically). Train with them via kd.teacher_logits=FILE: no teacher runs during
training, so teachers you cannot run here (e.g. HTS-AT or SSLAM outputs computed elsewhere, saved
in the same format) can be used.

  dass teacher-logits --model runs/ast_tiny/final --data synth/train.json --out synth/ast_logits.safetensors
  dass teacher-logits --model hf_ast_folder --model runs/other/final --data train.json --out ens.npz

Several --model options average the logits (an ensemble). Features are computed without
augmentation, padded/cut to --max-length frames (use the student's data.max_length). With mixup the
trainer mixes the cached logits with the mixup weight (an approximation of running the teacher on
the mixed clip).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True,
                        help="teacher: checkpoint folder/file, hub id, or transformers AST folder (repeat for an ensemble)")
    parser.add_argument("--data", required=True, help="AST JSON datafile")
    parser.add_argument("--labels", default=None, help="class_labels_indices.csv (default: next to the datafile)")
    parser.add_argument("--out", required=True, help="output file (.safetensors or .npz)")
    parser.add_argument("--max-length", type=int, default=1024, help="frames per clip (default 1024)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from ..data.dataset import AudioTaggingDataset
    from ..errors import ConfigError
    from ..train.teachers import TeacherEnsemble, load_teacher, save_cached_logits

    if not str(args.out).endswith((".safetensors", ".npz")):
        raise ConfigError(f"--out {args.out}: use a .safetensors or .npz file name")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    dataset = AudioTaggingDataset(args.data, args.labels, max_length=args.max_length)
    teacher = TeacherEnsemble([load_teacher(m, device) for m in args.model])
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    logits = []
    with torch.no_grad():
        for batch in tqdm(loader, desc="teacher logits", unit="batch"):
            logits.append(teacher(batch["features"].to(device)).float().cpu())
    logits = torch.cat(logits)
    if logits.shape[1] != dataset.num_classes:
        raise ConfigError(f"teacher gives {logits.shape[1]} classes but {dataset.label_csv} lists {dataset.num_classes}")
    save_cached_logits(args.out, [c.path for c in dataset.clips], logits, model_name=",".join(args.model))
    print(f"wrote {logits.shape[0]} x {logits.shape[1]} logits to {args.out}")
    return 0
