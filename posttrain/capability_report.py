"""The capability part of ``posttrain eval`` and of pipeline reports: score models on a k-shot multiple-choice
benchmark (posttrain/capability.py) and lay out the numbers, per subject, against a reference model."""

from __future__ import annotations

from typing import Any

from posttrain.capability import Benchmark, Scores, load_benchmark, paired_bootstrap, score_benchmark, summarise


def benchmark_dtype(precision: str):
    """'auto': bf16 where bf16 products are fast (a GPU with bf16, a CPU with AVX512-BF16/AMX), as lm-eval's
    dtype 'auto' gives for checkpoints stored in bf16 such as SmolLM2; else fp32."""
    from posttrain.models import frozen_base_dtype

    return frozen_base_dtype(precision=precision)


def score_model(name: str, benchmark: Benchmark, mc_format: str = "cloze", precision: str = "auto",
                label: str = "") -> Scores:
    """Load a model, merged folder or adapter checkpoint and score it on the benchmark (with a progress bar)."""
    from posttrain.models import load_for_inference

    loaded = load_for_inference(name, dtype=benchmark_dtype(precision))
    return score_benchmark(loaded.model, loaded.tokenizer, benchmark, mc_format, progress=f"{label or name}: multiple choice")


def comparison(scores: Scores, reference: Scores) -> dict[str, Any]:
    """Macro-average differences (scores - reference) of acc and acc_norm with paired bootstrap 95% intervals."""
    out: dict[str, Any] = {}
    for metric in ("acc", "acc_norm"):
        diff, low, high = paired_bootstrap(getattr(scores, metric), getattr(reference, metric), scores.subjects)
        out[metric] = {"diff": diff, "ci95": [low, high]}
    return out


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def capability_blocks(benchmark: Benchmark, shots: int, mc_format: str, results: dict[str, Scores],
                      reference: str | None = None) -> list[tuple[str, Any]]:
    """Report blocks: what was measured, a per-subject table of every model, and each model against ``reference``."""
    summaries = {label: summarise(scores) for label, scores in results.items()}
    first = next(iter(summaries.values()))
    blocks: list[tuple[str, Any]] = [
        ("h2", "Capability: k-shot multiple choice"),
        ("p", f"{shots}-shot, {mc_format} format, on {benchmark.source}: {first['questions']} questions in "
              f"{len(first['subjects'])} subjects; shots: {benchmark.shots_from}. acc: the choice with the highest "
              "log-likelihood is the answer; acc_norm: the same with each log-likelihood divided by the choice's length "
              "in characters (lm-evaluation-harness's definitions). Averages are macro: each subject counts once. "
              "Chance: 1 / number of choices."),
    ]
    header = ["subject", "questions", "chance"] + [f"{label} {m}" for label in summaries for m in ("acc", "acc_norm")]
    rows = [[name, row["questions"], round(row["chance"], 3)]
            + [round(summaries[label]["subjects"][name][m], 3) for label in summaries for m in ("acc", "acc_norm")]
            for name, row in first["subjects"].items()]
    rows.append(["macro average", first["questions"], round(first["chance"], 3)]
                + [round(summaries[label][m], 3) for label in summaries for m in ("acc", "acc_norm")])
    blocks.append(("table", (header, rows)))
    if reference and len(results) > 1:
        table = []
        for label, scores in results.items():
            if label == reference:
                continue
            diff = comparison(scores, results[reference])
            table.append([label] + [f"{_signed(diff[m]['diff'])} [{_signed(diff[m]['ci95'][0])}, {_signed(diff[m]['ci95'][1])}]"
                                    for m in ("acc", "acc_norm")])
        blocks += [("p", f"Difference from {reference} (macro average; 95% interval of a paired bootstrap over questions, "
                         "resampled within each subject): a negative difference is capability lost."),
                   ("table", (["model", f"acc - {reference}", f"acc_norm - {reference}"], table))]
    return blocks


def run_evaluation_capability(config) -> tuple[dict[str, Any], list[tuple[str, Any]], dict[str, Any]]:
    """The capability part of ``posttrain eval``: (flat summary, report blocks, details for metrics.json).

    The model is labelled "model" and the baseline (when given) "baseline", as in the rest of the eval report.
    lm-eval tasks are checked (names, reachable data) before any model loads."""
    from posttrain.report import markdown_table

    models = {"model": config.model, **({"baseline": config.baseline} if config.baseline else {})}
    summary: dict[str, Any] = {}
    blocks: list[tuple[str, Any]] = []
    details: dict[str, Any] = {}
    manager = None
    if config.lm_eval:
        from posttrain.harness import load_tasks, task_names

        manager = load_tasks(task_names(config.lm_eval))
    if config.benchmark:
        benchmark = load_benchmark(config.benchmark, config.shots, config.benchmark_dev, config.max_questions)
        results = {label: score_model(name, benchmark, config.mc_format, config.mc_precision, label)
                   for label, name in models.items()}
        details.update(benchmark=config.benchmark, shots=config.shots, format=config.mc_format, shots_from=benchmark.shots_from)
        for label, scores in results.items():
            stats = summarise(scores)
            details[label] = stats
            summary.update({f"{'' if label == 'model' else label + '_'}capability_{m}": stats[m] for m in ("acc", "acc_norm")})
        summary.update(capability_chance=details["model"]["chance"], capability_questions=details["model"]["questions"])
        if "baseline" in results:
            details["difference"] = comparison(results["model"], results["baseline"])
            for m, diff in details["difference"].items():
                summary[f"capability_{m}_diff"] = diff["diff"]
                summary[f"capability_{m}_diff_ci95"] = [round(v, 4) for v in diff["ci95"]]
        blocks += capability_blocks(benchmark, config.shots, config.mc_format, results, "baseline" if "baseline" in results else None)
    if config.lm_eval:
        from posttrain.harness import lm_eval_blocks, lm_eval_summary, run_lm_eval

        harness = {label: run_lm_eval(name, config.lm_eval, config.shots, config.max_questions, config.mc_precision,
                                      manager=manager) for label, name in models.items()}
        details["lm_eval"] = harness
        for label, results_of in harness.items():
            summary.update(lm_eval_summary(results_of, "" if label == "model" else f"{label}_"))
        blocks += lm_eval_blocks(harness, config.lm_eval, config.shots)
    for kind, value in blocks:  # the tables on the console too, before the summary lines
        print(f"\n{markdown_table(*value)}" if kind == "table" else f"\n{value}" if kind == "h2" else "", end="")
    print()
    return summary, blocks, details
