"""Experiment tracking (``--report_to``): TensorBoard, Weights & Biases or Trackio, through the libraries' own
integrations. The TRL stages hand the name to ``TrainingArguments.report_to`` (transformers' callbacks log what the
Trainer logs); the RL loop logs its per-step record (the rows of metrics.json) through accelerate's trackers.
TensorBoard's event files go to ``<output>/logs``, beside the checkpoint and outside ``checkpoints/``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from posttrain.config import ConfigError

LOGS = "logs"  # under a run's output folder
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def resolve_report_to(value: str) -> str:
    """The tracker ``--report_to`` names: 'auto' is tensorboard when it is installed, else none. A named tracker
    that is not installed is refused before anything trains."""
    if value == "auto":
        return "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
    if value != "none" and importlib.util.find_spec(PACKAGES[value]) is None:
        raise ConfigError(f"--report_to {value}: the {PACKAGES[value]} package is not installed; pip install "
                          f"{PACKAGES[value]} (or pip install 'posttrain[{value}]'), or pass --report_to none.")
    return value


def trainer_settings(report_to: str, output: Path) -> dict[str, Any]:
    """TrainingArguments fields for a TRL stage: the tracker, and the run's name in it (the output folder's)."""
    return {"report_to": resolve_report_to(report_to), "run_name": output.name or str(output), "project": "posttrain"}


def point_trainer_logs(trainer, output: Path) -> None:
    """Send the TensorBoard callback's event files to ``<output>/logs``: by default transformers writes them under
    the Trainer's output_dir, which is posttrain's checkpoints/ folder, where only checkpoints may live."""
    from transformers.integrations import TensorBoardCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(output / LOGS)


def accelerator_settings(report_to: str, output: Path) -> dict[str, Any]:
    """``Accelerator(**...)`` keyword arguments that make the RL loop log to the tracker ``--report_to`` names."""
    tracker = resolve_report_to(report_to)
    if tracker == "none":
        return {}
    from accelerate.utils import ProjectConfiguration

    # accelerate's TensorBoard tracker writes to <logging_dir>/<run name>: named "logs" it is <output>/logs, as for the
    # TRL stages
    return {"log_with": tracker, "project_config": ProjectConfiguration(project_dir=str(output), logging_dir=str(output))}


def start_tracking(accelerator, config: Any) -> None:
    """Open the run in the accelerator's trackers (none without --report_to), with the resolved config as its
    hyperparameters."""
    if not getattr(accelerator, "log_with", None):  # an accelerator a caller passed in may track nothing
        return
    from posttrain.config import to_dict
    from posttrain.stages.common import flatten

    flat = flatten(to_dict(config))
    name = LOGS if resolve_report_to(config.report_to) == "tensorboard" else "posttrain"  # wandb/trackio: the project
    run = {"wandb": {"name": Path(config.output).name}, "trackio": {"name": Path(config.output).name}}
    accelerator.init_trackers(name, config={k: v for k, v in flat.items() if isinstance(v, (int, float, str, bool))},
                              init_kwargs={k: v for k, v in run.items() if k == resolve_report_to(config.report_to)})


def log_metrics(accelerator, record: dict[str, Any]) -> None:
    """One RL step's record (a row of metrics.json) to the trackers, at its step."""
    if getattr(accelerator, "log_with", None):
        accelerator.log({k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}, step=record["step"])


def stop_tracking(accelerator) -> None:
    """Flush and close the trackers (not ``end_training``, which also ends the process group of a caller's
    accelerator)."""
    if getattr(accelerator, "log_with", None) and accelerator.is_main_process:
        for tracker in accelerator.trackers:
            tracker.finish()

