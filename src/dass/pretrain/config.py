"""Pretraining configuration (``dass pretrain CONFIG.yaml``): nested dataclasses, keys overridable as ``a.b=value``.

Sections and defaults (the SSAMBA/SSAST recipe, ``docs/pretraining.md``):

``data``     train (a directory of audio files, a text list of paths or an AST JSON datafile; labels
             ignored), valid (the same kinds; empty: hold out ``valid_clips`` files of train, chosen
             by a fixed permutation), valid_clips 64, max_length 1024 frames (10.24 s: clips are cut
             or zero-padded), cache_dir, num_workers, samples_per_epoch, mean, std (AudioSet's)
``masking``  num_masked (M per clip; null = 300 of 512 patches, scaled to the clip's patch count),
             valid_masked (null = 400 of 512, scaled), cluster true, cluster_sizes [3, 4, 5]
``objective`` kind "joint" (| "mpc" | "mpg"), mse_weight 10, temperature null (none, as the authors),
             negatives "clip" (| "batch": every masked patch of the process's batch)
``model``    name "ssamba_tiny" (any patch encoder: ssamba_*, ssast_*, ast_*), args (keyword
             overrides; the strides are set to the patch size and input_tdim to max_length)
``optim``    batch_size 64 (global), epochs 10, lr 1e-4, betas [0.95, 0.999], weight_decay 5e-8
             (AdamW), warmup_steps 1000, warmup_every 50 (``lr · step/warmup_steps`` set every 50th
             step while step <= warmup_steps), plateau_factor 0.5, plateau_patience 2 (on the
             validation masked accuracy), amp true (GPU only)
``run``      output_dir "runs/pretrain", seed 0, device "auto", eval_every 4000 (steps; validation +
             plateau step), checkpoint_every 200, log_every 10, eval_batch_size 32, progress true
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..features import AUDIOSET_MEAN, AUDIOSET_STD
from ..train.config import load_config as _load_train_style_config

__all__ = ["PretrainConfig", "load_pretrain_config"]


@dataclass
class PretrainDataConfig:
    train: str = ""
    valid: str = ""
    valid_clips: int = 64
    max_length: int = 1024
    cache_dir: str | None = None
    num_workers: int = 0
    samples_per_epoch: int | None = None
    mean: float = AUDIOSET_MEAN
    std: float = AUDIOSET_STD


@dataclass
class MaskingConfig:
    num_masked: int | None = None
    valid_masked: int | None = None
    cluster: bool = True
    cluster_sizes: list[int] = field(default_factory=lambda: [3, 4, 5])


@dataclass
class ObjectiveConfig:
    kind: str = "joint"
    mse_weight: float = 10.0
    temperature: float | None = None
    negatives: str = "clip"


@dataclass
class PretrainModelConfig:
    name: str = "ssamba_tiny"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class PretrainOptimConfig:
    batch_size: int = 64
    epochs: int = 10
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999])
    weight_decay: float = 5e-8
    warmup_steps: int = 1000
    warmup_every: int = 50
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    amp: bool = True


@dataclass
class PretrainRunConfig:
    output_dir: str = "runs/pretrain"
    seed: int = 0
    device: str = "auto"
    eval_every: int = 4000
    checkpoint_every: int = 200
    log_every: int = 10
    eval_batch_size: int = 32
    progress: bool = True


@dataclass
class PretrainConfig:
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    optim: PretrainOptimConfig = field(default_factory=PretrainOptimConfig)
    run: PretrainRunConfig = field(default_factory=PretrainRunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check values that the dataclass types cannot express."""
        from .losses import NEGATIVES
        from .model import OBJECTIVES

        if not self.data.train:
            raise ConfigError("data.train must be set (a directory of audio files, a text list or a JSON datafile)")
        if self.data.max_length < 16:
            raise ConfigError(f"data.max_length must be >= 16 frames (one patch), got {self.data.max_length}")
        if self.data.valid_clips < 1:
            raise ConfigError(f"data.valid_clips must be >= 1, got {self.data.valid_clips}")
        if self.optim.batch_size < 1 or self.optim.epochs < 1:
            raise ConfigError("optim.batch_size and optim.epochs must be >= 1")
        if len(self.optim.betas) != 2:
            raise ConfigError(f"optim.betas must have two values, got {self.optim.betas}")
        if self.optim.warmup_every < 1:
            raise ConfigError(f"optim.warmup_every must be >= 1, got {self.optim.warmup_every}")
        if not 0 < self.optim.plateau_factor <= 1:
            raise ConfigError(f"optim.plateau_factor must be in (0, 1], got {self.optim.plateau_factor}")
        if self.objective.kind not in OBJECTIVES:
            raise ConfigError(f"objective.kind must be one of {', '.join(OBJECTIVES)}, got {self.objective.kind!r}")
        if self.objective.negatives not in NEGATIVES:
            raise ConfigError(
                f"objective.negatives must be one of {', '.join(NEGATIVES)}, got {self.objective.negatives!r}"
            )
        if self.objective.temperature is not None and not self.objective.temperature > 0:
            raise ConfigError(f"objective.temperature must be positive or null, got {self.objective.temperature}")
        if not self.masking.cluster_sizes or any(int(c) < 1 for c in self.masking.cluster_sizes):
            raise ConfigError(f"masking.cluster_sizes must be positive integers, got {self.masking.cluster_sizes}")
        if self.run.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"run.device must be auto, cpu or cuda, got {self.run.device!r}")


def load_pretrain_config(path: str | Path | None, overrides: list[str] | None = None) -> PretrainConfig:
    """Read a YAML pretraining recipe (or the defaults when ``path`` is None) and apply ``overrides``."""
    return _load_train_style_config(path, overrides, config_class=PretrainConfig)
