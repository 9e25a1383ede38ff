"""One registry for every network dass knows.

Two tables:

* *named configs* (timm style): ``create_model("dass_small", num_classes=527)`` calls the factory
  registered under that name with keyword overrides.
* *architectures* (``model_type`` -> model class): used to rebuild a model from a saved
  ``config.json`` (see :mod:`dass.checkpoints`). Every model class has a class attribute
  ``model_type``, a class attribute ``config_class`` (a dataclass with ``to_dict()``/``from_dict()``)
  and an instance attribute ``config``; its constructor takes that config.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..errors import ConfigError

_NAMED: dict[str, Callable[..., nn.Module]] = {}
_ARCHITECTURES: dict[str, type] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a factory ``fn(**overrides) -> nn.Module`` under ``name``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _NAMED:
            raise ValueError(f"model name {name!r} registered twice")
        _NAMED[name] = fn
        return fn

    return wrap


def register_architecture(cls: type) -> type:
    """Class decorator: make ``cls`` rebuildable from a config dict with ``model_type == cls.model_type``."""
    _ARCHITECTURES[cls.model_type] = cls
    return cls


def _ensure_loaded() -> None:
    # Importing the model modules fills the tables.
    from . import dass as _dass  # noqa: F401

    try:
        from . import ast as _ast  # noqa: F401
    except ImportError:  # pragma: no cover - ast.py may not exist in minimal installs
        pass
    from . import ssamba as _ssamba  # noqa: F401


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    _ensure_loaded()
    return sorted(_NAMED)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a freshly initialised network from a named config, e.g. ``create_model("dass_small")``."""
    _ensure_loaded()
    if name not in _NAMED:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_NAMED))}")
    return _NAMED[name](**overrides)


def architecture(model_type: str) -> type:
    """The model class registered for ``model_type`` (e.g. ``"dass"``, ``"ast"``)."""
    _ensure_loaded()
    if model_type not in _ARCHITECTURES:
        raise ConfigError(
            f"unknown model_type {model_type!r}; known: {', '.join(sorted(_ARCHITECTURES))}"
        )
    return _ARCHITECTURES[model_type]


def build_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a network (random weights) from a config dict that carries ``model_type``."""
    if "model_type" not in config:
        raise ConfigError("config has no 'model_type' key")
    cls = architecture(config["model_type"])
    return cls(cls.config_class.from_dict(config))
