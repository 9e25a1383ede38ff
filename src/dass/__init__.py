"""dass: distilled audio state-space models.

Public entry points are imported lazily so that ``import dass`` and ``dass --help`` stay fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from .errors import AudioError, CheckpointError, ConfigError, DassError

_LAZY = {
    "load_audio": ("dass.audio", "load_audio"),
    "FeatureExtractor": ("dass.features", "FeatureExtractor"),
    "kaldi_fbank": ("dass.features", "kaldi_fbank"),
    "create_model": ("dass.models.registry", "create_model"),
    "list_models": ("dass.models.registry", "list_models"),
    "from_pretrained": ("dass.checkpoints", "from_pretrained"),
    "save_pretrained": ("dass.checkpoints", "save_pretrained"),
}

__all__ = ["AudioError", "CheckpointError", "ConfigError", "DassError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dass' has no attribute {name!r}")
