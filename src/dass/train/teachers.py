"""Teachers for knowledge distillation: live models, ensembles, and cached logits.

* A teacher spec is a checkpoint path / hub id (anything :func:`dass.checkpoints.from_pretrained`
  reads), a transformers ``ASTForAudioClassification`` folder (``config.json`` with
  ``model_type: audio-spectrogram-transformer``), or a mapping ``{model: NAME, checkpoint: FILE,
  args: {...}}`` (a :func:`dass.create_model` name plus a state-dict file).
* Several teachers form an ensemble: the mean of their logits.
* Cached logits (``dass teacher-logits``) are a safetensors file with one tensor ``logits``
  ``(N, classes)`` and metadata ``wav_paths`` (JSON list of absolute audio paths, row order), or an
  ``.npz`` with arrays ``logits`` and ``wav_paths``. They are looked up by the clip's resolved path.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError, DassError

__all__ = ["load_teacher", "TeacherEnsemble", "CachedLogits", "save_cached_logits"]


def _is_hf_ast_folder(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "audio-spectrogram-transformer"
    except (OSError, ValueError):
        return False


def load_teacher(spec: Any, device: torch.device | str = "cpu") -> nn.Module:
    """One teacher network (eval mode, no gradients) from a spec (see the module docstring)."""
    if isinstance(spec, dict):
        unknown = set(spec) - {"model", "checkpoint", "args"}
        if unknown or "model" not in spec or "checkpoint" not in spec:
            raise ConfigError(f"teacher {spec!r}: expected keys model, checkpoint and optional args")
        from ..checkpoints import load_state_dict_file
        from ..models.registry import create_model

        model = create_model(str(spec["model"]), **dict(spec.get("args") or {}))
        state = load_state_dict_file(spec["checkpoint"])
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{spec['checkpoint']}: does not fit {spec['model']}: {str(e).splitlines()[0]}") from None
    elif isinstance(spec, (str, os.PathLike)):
        if _is_hf_ast_folder(Path(spec)):
            from ..models.ast import from_hf_ast

            model = from_hf_ast(spec)
        else:
            from ..checkpoints import from_pretrained

            model = from_pretrained(spec)
    else:
        raise ConfigError(f"teacher spec must be a path or a mapping, got {spec!r}")
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class TeacherEnsemble(nn.Module):
    """Mean of the logits of one or more teachers: ``(B, T, F) -> (B, classes)``."""

    def __init__(self, teachers: list[nn.Module]) -> None:
        super().__init__()
        if not teachers:
            raise ConfigError("an ensemble needs at least one teacher")
        self.teachers = nn.ModuleList(teachers)

    @torch.no_grad()
    def forward(self, features: Tensor) -> Tensor:
        logits = [t(features).float() for t in self.teachers]
        shapes = {tuple(x.shape) for x in logits}
        if len(shapes) != 1:
            raise ConfigError(f"teachers disagree on the output shape: {sorted(shapes)}")
        return torch.stack(logits).mean(0)


class CachedLogits:
    """Teacher logits stored by ``dass teacher-logits``, looked up by absolute audio path."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DassError(f"{self.path}: no such teacher-logits file")
        if self.path.suffix == ".npz":
            with np.load(self.path, allow_pickle=False) as z:
                logits, paths = torch.from_numpy(z["logits"]), [str(p) for p in z["wav_paths"]]
        else:
            from safetensors import safe_open

            try:
                with safe_open(str(self.path), framework="pt") as f:
                    logits = f.get_tensor("logits")
                    paths = json.loads((f.metadata() or {})["wav_paths"])
            except Exception as e:
                raise DassError(f"{self.path}: not a teacher-logits file written by `dass teacher-logits` ({e})") from None
        if logits.dim() != 2 or logits.shape[0] != len(paths):
            raise DassError(f"{self.path}: {len(paths)} paths but logits of shape {tuple(logits.shape)}")
        self.logits = logits.float()
        self.row = {p: i for i, p in enumerate(paths)}

    @property
    def num_classes(self) -> int:
        return self.logits.shape[1]

    def lookup(self, paths: list[str]) -> Tensor:
        """``(len(paths), classes)`` logits; a clip without a row raises :class:`DassError`."""
        rows = []
        for p in paths:
            if p not in self.row:
                raise DassError(f"{self.path}: no teacher logits for {p} (run `dass teacher-logits` on this datafile)")
            rows.append(self.row[p])
        return self.logits[rows]


def save_cached_logits(path: str | os.PathLike, wav_paths: list[str], logits: Tensor, model_name: str = "") -> Path:
    """Write ``logits`` ``(N, classes)`` keyed by ``wav_paths`` atomically (.safetensors or .npz by suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        if path.suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, logits=logits.float().numpy(), wav_paths=np.array(wav_paths, dtype=str))
        elif path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({"logits": logits.float().contiguous()}, tmp,
                      metadata={"wav_paths": json.dumps(wav_paths), "model": model_name})
        else:
            raise ConfigError(f"{path}: teacher logits are written as .safetensors or .npz")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
