"""Exceptions a user can cause. The CLI prints their message without a traceback."""

from __future__ import annotations


class SnacsError(Exception):
    """Base class for every error caused by user input (bad path, option, checkpoint, target)."""


class ConfigError(SnacsError, ValueError):
    """An option, config file or command-line flag is invalid."""


class DataError(SnacsError):
    """A dataset is missing, unreadable or unsuitable (too few samples, missing classes)."""


class CheckpointError(SnacsError):
    """A checkpoint cannot be read or does not match the architecture."""


class TargetError(SnacsError, ValueError):
    """A pruning target is out of range or unreachable under the per-layer limits."""
