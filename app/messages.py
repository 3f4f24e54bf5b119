"""User-facing messages for what is missing, so views show one clear sentence (and the command
that builds the missing piece) instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class AppMessage(Exception):
    """Something the user can fix or should know; the view shows ``str(exc)`` as an alert."""

    def __init__(self, text: str, level: str = "warning"):
        super().__init__(text)
        self.level = level


def missing_dataset(dataset_dir: Path, reason: str) -> AppMessage:
    return AppMessage(
        f"Cannot open the dataset at {str(dataset_dir)!r} ({reason}). Build the default one with "
        f"`aion-engine prepare --default` or point AION_DATASET at a dataset folder.",
        level="danger",
    )


def missing_index(dataset_dir: Path, model: str, view: str, what: str = "index") -> AppMessage:
    return AppMessage(
        f"No {view} {what} for this dataset and model yet. Build it with "
        f"`aion-engine embed --dataset {dataset_dir} --model {model} --view {view}` then "
        f"`aion-engine index --dataset {dataset_dir} --model {model} --view {view}`."
    )


def missing_engine_part(module: str, command: str) -> AppMessage:
    return AppMessage(f"This view needs the engine module `{module}`, which this installation lacks "
                      f"(it provides `{command}`); update the engine to use it.")


def missing_predictions(dataset_dir: Path, model: str, task: str) -> AppMessage:
    return AppMessage(
        f"No {task} predictions for this dataset and model yet. Compute them with "
        f"`aion-engine predict --dataset {dataset_dir} --model {model} --task {task} --object-id ID` "
        f"(or `aion-engine prepare --default` for the default dataset)."
    )
