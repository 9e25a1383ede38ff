"""Fine-tuning from a (self-supervised) checkpoint: ``model.init_from`` and the head learning rate.

:func:`model_from_checkpoint` builds the model ``dass train`` fine-tunes from

* our folders: a self-supervised one written by ``dass pretrain`` (encoder + ``ssl_heads.safetensors``)
  or any ``save_pretrained`` folder (a fine-tuned model of ours);
* the authors' SSAMBA ``.pth`` files, self-supervised or fine-tuned (``module.v.*``), converted by
  :func:`dass.models.ssamba.config_and_state_from_authors`, whose position-table rule keeps the
  authors' hard-coded 8 rows.

The model keeps the checkpoint's architecture; ``model.args`` replace config fields on top of it
(the fine-tuning geometry ``fstride``, ``tstride``, ``input_tdim``; ``pooling``, ``drop_path_rate``, ...).
When the patch grid changes, the position table is adapted by the one rule of AST/SSAST/SSAMBA
(:func:`dass.models.ssamba.adapt_position_table`: centre crop when smaller, bilinear otherwise,
time first, then frequency); the 16 x 16 patch kernel is kept at any stride. The classification
head is always fresh (the new model's own initialisation), sized for the task's classes.

:func:`parameter_groups` puts the head (``mlp_head.*``, DASS's ``classifier.head.*``) in its own
optimizer group with ``lr_scale = head_lr_multiplier`` (the authors' ``head_lr``); the schedule
multiplies every group's learning rate by its ``lr_scale``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError

__all__ = ["HEAD_PREFIXES", "head_keys", "model_from_checkpoint", "parameter_groups"]

#: The classification head of each architecture (what fine-tuning re-initialises).
HEAD_PREFIXES = {"ssamba": "mlp_head.", "ast": "mlp_head.", "dass": "classifier.head."}


def head_keys(model: nn.Module) -> list[str]:
    """Names of the head's parameters in ``model.state_dict()``."""
    prefix = HEAD_PREFIXES.get(getattr(model, "model_type", ""), "mlp_head.")
    return [k for k in model.state_dict() if k.startswith(prefix)]


def _adapt_table(state: dict[str, torch.Tensor], old_config: Any, model: nn.Module) -> None:
    """Adapt ``state["pos_embed"]`` (learned) from ``old_config``'s patch grid to ``model``'s, in place."""
    from ..models.ssamba import adapt_position_table

    table = state.get("pos_embed")
    if table is None or getattr(model, "pos_embed", None) is None:
        return
    old_grid, new_grid = tuple(old_config.grid), tuple(model.config.grid)
    if old_grid == new_grid:
        return
    prefix = int(model.num_prefix_tokens)
    patches = adapt_position_table(table[:, prefix:], old_grid, new_grid)
    state["pos_embed"] = torch.cat([table[:, :prefix], patches], dim=1)


def _from_our_folder(path: Path, overrides: dict[str, Any]) -> nn.Module:
    from ..checkpoints import load_checkpoint, load_weights
    from ..models.registry import architecture, build_from_config

    config, state = load_checkpoint(path)
    old_config = architecture(config["model_type"]).config_class.from_dict(dict(config))
    merged = {**config, **overrides}
    try:
        model = build_from_config(merged)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    _adapt_table(state, old_config, model)
    fresh, head = model.state_dict(), head_keys(model)
    state = {k: v for k, v in state.items() if k not in head}
    state.update({k: fresh[k] for k in head})  # the new model's own head init (seeded by the trainer)
    load_weights(model, state, source=str(path))
    return model


def _from_authors_ssamba(path: Path, state_dict: dict[str, torch.Tensor], overrides: dict[str, Any]) -> nn.Module:
    from ..checkpoints import load_weights
    from ..models.ssamba import SSAMBA, authors_key, config_and_state_from_authors

    overrides = dict(overrides)
    geometry = {
        k: overrides.pop(k)
        for k in ("fstride", "tstride", "input_fdim", "input_tdim", "num_classes", "norm")
        if k in overrides
    }
    config, state = config_and_state_from_authors(state_dict, source=str(path), **geometry, **overrides)
    model = SSAMBA(config)
    fresh = model.state_dict()
    state.update({k: fresh[k] for k in head_keys(model)})  # the new model's own head init (seeded by the trainer)
    load_weights(model, state, source=str(path), key_name=authors_key)
    return model


def model_from_checkpoint(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """The model to fine-tune from ``path`` with config ``overrides`` (``num_classes``, ``labels``, geometry,
    ...) and a fresh head; in train mode. See the module docstring."""
    from ..checkpoints import load_state_dict_file
    from ..models.ssamba import is_authors_state_dict

    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"{path}: no config.json; model.init_from takes a folder written by dass pretrain "
                "or save_pretrained, or the authors' SSAMBA .pth"
            )
        model = _from_our_folder(path, overrides)
    elif path.is_file():
        state_dict = load_state_dict_file(path)
        if not is_authors_state_dict(state_dict):
            raise CheckpointError(
                f"{path}: model.init_from reads our folders and the authors' SSAMBA .pth files "
                "(module.v.layers.*.mixer.A_b_log, ...); use model.init for other checkpoints"
            )
        model = _from_authors_ssamba(path, state_dict, overrides)
    else:
        raise CheckpointError(f"model.init_from: no such checkpoint file or folder: {path}")
    return model.train()


def parameter_groups(model: nn.Module, head_lr_multiplier: float = 1.0) -> list[dict[str, Any]]:
    """Optimizer groups: the body at ``lr_scale`` 1 and, if the multiplier is not 1, the head at the multiplier."""
    if head_lr_multiplier == 1.0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}]
    head = set(head_keys(model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    body_params = [p for n, p in named if n not in head]
    head_params = [p for n, p in named if n in head]
    if not head_params:
        raise ConfigError(
            f"optim.head_lr_multiplier: {type(model).__name__} has no head parameters "
            f"({', '.join(HEAD_PREFIXES.values())})"
        )
    return [{"params": body_params, "lr_scale": 1.0}, {"params": head_params, "lr_scale": float(head_lr_multiplier)}]
