"""Metrics files, plots and model cards that every stage writes into its checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class MetricsRecorder(TrainerCallback):
    """Collects every log line a transformers Trainer emits, tagged with its optimizer step."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.history.append({"step": state.global_step, **{k: v for k, v in logs.items() if _is_number(v)}})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def write_metrics(folder: str | Path, final: dict[str, Any], history: list[dict[str, Any]], **extra: Any) -> Path:
    path = Path(folder) / "metrics.json"
    path.write_text(json.dumps(_clean({"final": final, "history": history, **extra}), indent=2) + "\n")
    return path


def series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(h["step"], h[key]) for h in history if key in h and h[key] is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(path: str | Path, history: list[dict[str, Any]], panels: list[tuple[str, list[str]]], title: str) -> Path | None:
    """One PNG with a panel per (title, keys) pair; keys missing from the history are skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, [k for k in keys if series(history, k)[0]]) for name, keys in panels]
    panels = [(name, keys) for name, keys in panels if keys]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels):
        for key in keys:
            steps, values = series(history, key)
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_histograms(path: str | Path, groups: dict[str, list[float]], title: str, xlabel: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, values in groups.items():
        ax.hist(values, bins=30, alpha=0.55, label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_model_card(folder: str | Path, stage: str, base_model: str, data: str, config: dict[str, Any],
                     metrics: dict[str, Any], plots: list[str] = (), notes: str = "") -> Path:
    """A README.md describing the checkpoint: what it is, how it was made, how it did, how to use it."""
    lines = [
        f"# posttrain {stage} checkpoint",
        "",
        f"- **Stage**: {stage}",
        f"- **Base model**: `{base_model}`",
        f"- **Data**: `{data}`",
        "",
        "## Use",
        "",
        "```bash",
        f"posttrain chat {Path(folder).name} --prompt \"Hello!\"",
        f"posttrain merge {Path(folder).name} --output {Path(folder).name}-merged",
        "```",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_format(v)} |" for k, v in metrics.items() if not isinstance(v, (dict, list))]
    lines += ["", "## Hyperparameters", "", "```yaml"]
    import yaml

    lines += [yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    for plot in plots:
        lines += [f"![{Path(plot).stem}]({Path(plot).name})", ""]
    if notes:
        lines += [notes, ""]
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines))
    return path
