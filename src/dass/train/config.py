"""Training configuration: nested dataclasses, read from YAML, every key overridable as ``a.b=value``.

Sections and defaults (the AST/DASS AudioSet-20K recipe, SPEC §6):

``data``    train, eval (JSON datafiles), labels (default: ``class_labels_indices.csv`` next to the
            train datafile), max_length 1024, cache_dir, num_workers, balanced_sampling,
            samples_per_epoch, eval_max_clips (evaluate on the first N eval clips only), mean, std,
            task "multilabel" (BCE, mAP) | "singlelabel" (one label per clip: cross-entropy,
            accuracy, top-5 accuracy, confusion matrix; :mod:`dass.train.tasks`)
``augment`` mixup 0.5, freqm 48, timem 192
``model``   name ("dass_small", any :func:`dass.create_model` name), args (free-form keyword
            overrides for the named config, e.g. ``model.args.drop_path_rate=0.1``), init (a checkpoint
            the student starts from, loaded with ``from_pretrained``), init_from (fine-tune the encoder
            of a self-supervised / pretrained checkpoint with a fresh head, the position table adapted
            to ``model.args``' geometry: :mod:`dass.train.finetune`; ``model.name`` is then unused)
``optim``   batch_size 12 (*global*: split evenly over the processes), epochs 25, lr 1e-4,
            betas [0.95, 0.999], weight_decay 5e-7, warmup_steps 1000, lr_decay_start 10,
            lr_decay_every 5, lr_decay_factor 0.5, wa_start 6 (first epoch, 1-based, of the weight
            average; 0 = no averaging), amp true (mixed precision, used on GPU only),
            head_lr_multiplier 1 (the classification head's learning rate is lr times this)
``kd``      teachers [] (paths / hub ids for ``from_pretrained``, or ``{model: NAME, checkpoint: FILE,
            args: {...}}``; several = ensemble, mean of logits), teacher_logits (a file written by
            ``dass teacher-logits``), weight 0.5, kind "kldiv", temperature 1.0
``run``     output_dir "runs/dass", seed 0, device "auto", checkpoint_every 200 (steps), log_every 10,
            eval_batch_size 32, progress true

Values given on the command line are parsed as YAML (``optim.lr=3e-4``, ``kd.teachers=[a,b]``,
``data.cache_dir=null``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

__all__ = ["TrainConfig", "load_config", "apply_overrides", "config_from_dict"]


@dataclass
class DataConfig:
    train: str = ""
    eval: str = ""
    labels: str | None = None
    max_length: int = 1024
    cache_dir: str | None = None
    num_workers: int = 0
    balanced_sampling: bool = False
    samples_per_epoch: int | None = None
    eval_max_clips: int | None = None
    mean: float = -4.2677393
    std: float = 4.5689974
    task: str = "multilabel"


@dataclass
class AugmentConfig:
    mixup: float = 0.5
    freqm: int = 48
    timem: int = 192


@dataclass
class ModelConfig:
    name: str = "dass_small"
    args: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    init_from: str | None = None


@dataclass
class OptimConfig:
    batch_size: int = 12
    epochs: int = 25
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.95, 0.999])
    weight_decay: float = 5e-7
    warmup_steps: int = 1000
    lr_decay_start: int = 10
    lr_decay_every: int = 5
    lr_decay_factor: float = 0.5
    wa_start: int = 6
    amp: bool = True
    head_lr_multiplier: float = 1.0


@dataclass
class KDConfig:
    teachers: list[Any] = field(default_factory=list)
    teacher_logits: str | None = None
    weight: float = 0.5
    kind: str = "kldiv"
    temperature: float = 1.0


@dataclass
class RunConfig:
    output_dir: str = "runs/dass"
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 200
    log_every: int = 10
    eval_batch_size: int = 32
    progress: bool = True


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check values that the dataclass types cannot express."""
        from .losses import KD_KINDS

        if not self.data.train or not self.data.eval:
            raise ConfigError("data.train and data.eval (JSON datafiles) must be set")
        if self.data.eval_max_clips is not None and self.data.eval_max_clips < 1:
            raise ConfigError(f"data.eval_max_clips must be >= 1 (or null for all), got {self.data.eval_max_clips}")
        if self.optim.batch_size < 1 or self.optim.epochs < 1:
            raise ConfigError("optim.batch_size and optim.epochs must be >= 1")
        if self.kd.kind not in KD_KINDS:
            raise ConfigError(f"kd.kind {self.kd.kind!r} is not one of {', '.join(KD_KINDS)}")
        if self.kd.teachers and self.kd.teacher_logits:
            raise ConfigError("set kd.teachers or kd.teacher_logits, not both")
        if not 0.0 <= self.kd.weight <= 1.0:
            raise ConfigError(f"kd.weight must be in [0, 1], got {self.kd.weight}")
        if self.run.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"run.device must be auto, cpu or cuda, got {self.run.device!r}")
        if len(self.optim.betas) != 2:
            raise ConfigError(f"optim.betas must have two values, got {self.optim.betas}")
        from .tasks import TASKS

        if self.data.task not in TASKS:
            raise ConfigError(f"data.task must be one of {', '.join(TASKS)}, got {self.data.task!r}")
        if self.model.init and self.model.init_from:
            raise ConfigError("set model.init (a model to continue training) or model.init_from (an encoder to "
                              "fine-tune with a fresh head), not both")
        if not self.optim.head_lr_multiplier > 0:
            raise ConfigError(f"optim.head_lr_multiplier must be positive, got {self.optim.head_lr_multiplier}")


def _keys(section: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(section)]


def _coerce(key: str, value: Any, annotation: str) -> Any:
    """Check/convert a YAML value for a field annotated ``annotation`` (e.g. ``"float | None"``)."""
    kinds = [a.strip() for a in annotation.split("|")]
    if value is None:
        if "None" in kinds:
            return None
        raise ConfigError(f"{key} cannot be null")
    kind = kinds[0]
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "str":
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if kind.startswith("list"):
            if not isinstance(value, list):
                raise ValueError
            return [float(v) for v in value] if kind == "list[float]" else list(value)
        if kind.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {annotation}, got {value!r}") from None
    raise AssertionError(f"unhandled annotation {annotation}")  # pragma: no cover


def _set(config: Any, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    sections = _keys(config)
    if parts[0] not in sections:
        raise ConfigError(f"unknown config key {dotted!r}; valid sections: {', '.join(sections)}")
    section = getattr(config, parts[0])
    if len(parts) == 1:
        if not isinstance(value, dict):
            raise ConfigError(f"{dotted} is a section; set its keys, e.g. {dotted}.{_keys(section)[0]}=...")
        for k, v in value.items():
            _set(config, f"{dotted}.{k}", v)
        return
    name = parts[1]
    fields = {f.name: f for f in dataclasses.fields(section)}
    if name not in fields:
        valid = ", ".join(f"{parts[0]}.{k}" for k in fields)
        raise ConfigError(f"unknown config key {dotted!r}; valid keys: {valid}")
    annotation = fields[name].type if isinstance(fields[name].type, str) else str(fields[name].type)
    if len(parts) > 2:  # into a free-form dict such as model.args
        if not annotation.startswith("dict"):
            raise ConfigError(f"unknown config key {dotted!r}: {parts[0]}.{name} has no sub-keys")
        target = getattr(section, name)
        for p in parts[2:-1]:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{dotted}: {p} is not a mapping")
        target[parts[-1]] = value
        return
    setattr(section, name, _coerce(dotted, value, annotation))


def config_from_dict(values: dict[str, Any], config_class: type | None = None) -> TrainConfig:
    """A :class:`TrainConfig` (or ``config_class``, e.g. the pretraining config) from a nested dict
    (unknown keys raise :class:`ConfigError`)."""
    config = (config_class or TrainConfig)()
    if not isinstance(values, dict):
        raise ConfigError(f"a training config must be a mapping of sections, got {type(values).__name__}")
    for key, value in values.items():
        _set(config, str(key), value)
    return config


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """Apply ``key=value`` strings (dotted keys, YAML values) in order."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=3e-4)")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
        _set(config, key.strip(), value)
    return config


def load_config(path: str | Path | None, overrides: list[str] | None = None, *,
                config_class: type | None = None) -> TrainConfig:
    """Read a YAML recipe (or start from defaults when ``path`` is None) and apply ``overrides``.

    ``config_class``: another config dataclass of sections built the same way (``dass pretrain``'s)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML ({e})") from None
        try:
            config = config_from_dict(values, config_class)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    else:
        config = (config_class or TrainConfig)()
    apply_overrides(config, overrides or [])
    config.validate()
    return config

