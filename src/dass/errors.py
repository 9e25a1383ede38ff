"""Exceptions raised by dass. Every user-facing failure is a :class:`DassError` with a readable message."""

from __future__ import annotations


class DassError(Exception):
    """Base class of every error dass raises on purpose."""


class AudioError(DassError, ValueError):
    """Audio that cannot be decoded or is unusable (corrupt, empty, too short, NaN, ...)."""


class CheckpointError(DassError):
    """A checkpoint that cannot be found, read, or does not fit the model."""


class ConfigError(DassError, ValueError):
    """An unknown model name, option or config key."""
