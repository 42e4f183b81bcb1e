"""``posttrain eval --lm_eval TASKS``: lm-evaluation-harness tasks on a posttrain checkpoint.

The checkpoint is loaded as everywhere else (``load_for_inference``: a plain model, a merged folder, or an
adapter folder on its base) and handed to lm-eval's Hugging Face wrapper ``HFLM`` as a model object, so an
adapter runs as peft loads it, with posttrain's tokenizer (chat template and any added tokens). lm-eval fetches
its tasks' datasets from the Hugging Face hub (or its local cache); when it cannot, the error says so and
how to score a local benchmark file instead.
"""

from __future__ import annotations

from typing import Any

from posttrain.config import ConfigError

INSTALL = "pip install 'posttrain[lm_eval]'  (or: pip install lm_eval)"


class HarnessError(ConfigError):
    """lm-evaluation-harness is missing, a task is unknown, or its datasets cannot be reached."""


def _unreachable(tasks: list[str], err: Exception) -> HarnessError:
    return HarnessError(
        f"--lm_eval {','.join(tasks)}: lm-evaluation-harness could not reach its datasets ({type(err).__name__}: {err}). "
        "Its tasks download their data from the Hugging Face hub: run once where the hub is reachable (the data is then "
        "cached under ~/.cache/huggingface), or score a local multiple-choice file instead: "
        "posttrain eval --model CKPT --benchmark FILE --shots 5 (README: Capability; data_samples/multiple_choice.jsonl "
        "is one).")


def task_names(spec: str) -> list[str]:
    names = [t.strip() for t in spec.split(",") if t.strip()]
    if not names:
        raise HarnessError("--lm_eval: give one or more lm-eval task names separated by commas, e.g. --lm_eval arc_easy,mmlu.")
    return names


def load_tasks(tasks: list[str], include_path: str | None = None) -> Any:
    """The TaskManager, after checking that every task exists and its data can be loaded (before any model loads)."""
    try:
        from lm_eval.tasks import TaskManager, get_task_dict
    except ImportError:
        raise HarnessError(f"--lm_eval needs lm-evaluation-harness, which is not installed: {INSTALL}") from None
    manager = TaskManager(include_path=include_path)
    try:
        get_task_dict(tasks, manager)
    except KeyError as err:
        raise HarnessError(f"--lm_eval: {err.args[0] if err.args else err}. `lm_eval ls tasks` lists the task names.") from None
    except (OSError, ConnectionError) as err:  # offline, hub unreachable, dataset not cached (FileNotFoundError is one)
        raise _unreachable(tasks, err) from None
    return manager


def run_lm_eval(model_name: str, spec: str, shots: int | None, limit: int = 0, precision: str = "auto",
                batch_size: int = 8, manager: Any = None) -> dict[str, dict[str, float]]:
    """lm-eval's results for each task: {task: {"acc,none": ..., "acc_stderr,none": ..., ...}} (numbers only).

    ``manager``: a TaskManager from :func:`load_tasks` (which checks the tasks first); made here when None."""
    tasks = task_names(spec)
    manager = manager or load_tasks(tasks)
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from posttrain.capability_report import benchmark_dtype
    from posttrain.models import load_for_inference

    loaded = load_for_inference(model_name, dtype=benchmark_dtype(precision))
    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
    try:
        output = simple_evaluate(model=lm, tasks=tasks, num_fewshot=shots, limit=limit or None, task_manager=manager,
                                 log_samples=False, bootstrap_iters=0)
    except (OSError, ConnectionError) as err:
        raise _unreachable(tasks, err) from None
    return {task: {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for task, metrics in output["results"].items()}


def lm_eval_blocks(results: dict[str, dict[str, dict[str, float]]], spec: str, shots: int | None) -> list[tuple[str, Any]]:
    """Report blocks: one row per task and metric, a column per model (``results``: label -> task -> metrics)."""
    labels = list(results)
    first = results[labels[0]]
    rows = []
    for task, metrics in first.items():
        for key in metrics:
            if "_stderr" in key:
                continue
            rows.append([task, key.replace(",none", "")] + [results[label].get(task, {}).get(key, "") for label in labels])
    return [("h2", "lm-evaluation-harness"),
            ("p", f"Tasks {spec}, {shots if shots is not None else 'each task’s default'} shots, run by lm-eval's HFLM on the "
                  "loaded checkpoint (lm-eval's own prompts and metrics)."),
            ("table", (["task", "metric", *labels], rows))]


def lm_eval_summary(results: dict[str, dict[str, float]], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}lm_eval_{task}_{key.replace(',none', '')}": value
            for task, metrics in results.items() for key, value in metrics.items() if "_stderr" not in key}
