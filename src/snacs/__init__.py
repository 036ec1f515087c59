"""snacs: slim convolutional networks with SNACS (adaptive connectivity scores)."""

from __future__ import annotations

from snacs.errors import CheckpointError, ConfigError, DataError, SnacsError, TargetError

__version__ = "0.1.0"

__all__ = [
    "SnacsError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "TargetError",
    "__version__",
]
