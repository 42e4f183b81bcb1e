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

    def on_train_begin(self, args, state, control, **kwargs):
        # a resumed run starts from the checkpoint's state: keep the steps it logged before the cut
        if not self.history:
            self.history = [{"step": h.get("step", 0), **{k: v for k, v in h.items() if _is_number(v) and k != "step"}}
                            for h in state.log_history]

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
            line, = ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=key,
                            alpha=0.45 if len(steps) >= 8 else 1.0)
            if len(steps) >= 8:  # noisy per-step values (small RL batches): show the trend too
                window = max(3, len(steps) // 6)
                smooth = [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
                          for i in range(len(values))]
                ax.plot(steps, smooth, color=line.get_color(), linewidth=2, label=f"{key} (mean of {window})")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(ax.get_lines()) > 1:
            ax.legend(fontsize=7)
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


def plot_scatter(path: str | Path, groups: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str,
                 ylabel: str) -> Path:
    """One scatter PNG with a colour per group of (x values, y values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, (xs, ys) in groups.items():
        ax.scatter(xs, ys, s=10, alpha=0.6, label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
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
                     metrics: dict[str, Any], plots: list[str] = (), notes: str = "", usage: list[str] | None = None,
                     output: str | Path | None = None) -> Path:
    """A README.md describing the checkpoint: what it is, how it was made, how it did, how to use it.

    ``folder`` is where the card is written (a stage's scratch folder); ``output`` is the checkpoint's final
    path, named in the usage lines. ``usage`` replaces the default commands (chat, merge) for checkpoints that
    are not chat models."""
    name = str(output or folder)
    usage = usage or [f"posttrain chat {name} --prompt \"Hello!\"", f"posttrain merge {name} --output {name}-merged"]
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
        *usage,
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
    metadata = card_metadata(folder, stage, base_model, data)
    path.write_text("\n".join(lines))
    from huggingface_hub import metadata_save

    metadata_save(path, metadata)  # the hub reads the YAML front matter: base model, library, tags, datasets
    return path


# the hub's tags for each stage (TRL's trainers tag their cards "trl" and these)
STAGE_TAGS = {"SFT": ["trl", "sft"], "DPO": ["trl", "dpo"], "reward model": ["trl", "reward-trainer"]}
HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # posttrain's model aliases on the hub


def card_metadata(folder: str | Path, stage: str, base_model: str, data: str) -> dict[str, Any]:
    """The card's front matter: what peft's ``save_pretrained`` wrote into the folder's README.md (base_model,
    library_name, pipeline_tag, tags) kept, with posttrain's tags, the stage's, and a hub dataset added."""
    from huggingface_hub import metadata_load

    from posttrain.hub import is_hub_id

    card = Path(folder) / "README.md"
    metadata = dict((metadata_load(card) if card.is_file() else None) or {})
    metadata.setdefault("base_model", HUB_IDS.get(base_model, base_model))
    metadata.setdefault("library_name", "peft" if (Path(folder) / "adapter_config.json").is_file() else "transformers")
    metadata.setdefault("pipeline_tag", "text-classification" if stage == "reward model" else "text-generation")
    algo = stage.split("(")[-1].rstrip(")").lower() if stage.startswith("RLHF") else None
    tags = list(metadata.get("tags") or [])
    for tag in ["posttrain", *STAGE_TAGS.get(stage, ["rlhf", algo] if algo else [])]:
        if tag not in tags:
            tags.append(tag)
    metadata["tags"] = tags
    if data and is_hub_id(data) and not metadata.get("datasets"):
        metadata["datasets"] = [data]
    return metadata


# ---------------------------------------------------------------------------------------------
# Report pages (pipeline and evaluation reports): one Markdown page and the same page as HTML
# ---------------------------------------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return _format(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def write_report_page(folder: str | Path, name: str, title: str, blocks: list[tuple[str, Any]]) -> list[Path]:
    """Write ``name``.md and ``name``.html into ``folder`` from blocks, in order.

    Blocks: ("h2", text), ("p", text), ("table", (header, rows)) or ("image", path to a PNG). The Markdown links
    images by relative path; the HTML embeds them, so the .html file can be mailed or moved on its own.
    """
    import base64
    import html
    import os

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    md, page = [f"# {title}", ""], [f"<h1>{html.escape(title)}</h1>"]
    for kind, value in blocks:
        if kind == "h2":
            md += [f"## {value}", ""]
            page.append(f"<h2>{html.escape(value)}</h2>")
        elif kind == "p":
            md += [value, ""]
            page.append(f"<p>{html.escape(value)}</p>")
        elif kind == "table":
            header, rows = value
            md += [markdown_table(header, rows), ""]
            head = "".join(f"<th>{html.escape(_format(h))}</th>" for h in header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(_format(v))}</td>" for v in row) + "</tr>" for row in rows)
            page.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "image":
            image = Path(value)
            md += [f"![{image.stem}]({Path(os.path.relpath(image, folder)).as_posix()})", ""]
            data = base64.b64encode(image.read_bytes()).decode()
            page.append(f'<p><img alt="{html.escape(image.stem)}" src="data:image/png;base64,{data}"></p>')
        else:
            raise ValueError(f"unknown report block kind {kind!r}")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "vertical-align:top;text-align:left}img{max-width:100%}")
    paths = [folder / f"{name}.md", folder / f"{name}.html"]
    paths[0].write_text("\n".join(md), encoding="utf-8")
    paths[1].write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                        f"<style>{style}</style></head><body>\n" + "\n".join(page) + "\n</body></html>\n", encoding="utf-8")
    return paths
