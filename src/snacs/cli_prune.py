"""Pruning subcommands of the CLI (prune, finetune, export); filled in with the pipeline."""

from __future__ import annotations


def add_commands(sub, add_model, add_data, add_train, add_common) -> None:
    return None
