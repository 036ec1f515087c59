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

from snacs.modelfile import load, save  # noqa: E402
from snacs.models import create_model, list_models  # noqa: E402
from snacs.pruner import SNACS, PruneResult, prune  # noqa: E402

__all__ += ["SNACS", "PruneResult", "prune", "load", "save", "create_model", "list_models"]
