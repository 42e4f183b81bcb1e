"""Chain stages from a pipelines/*.yaml file and keep a lineage manifest of what ran on what.

A pipeline file::

    output: runs/pipeline-dpo              # the pipeline's folder (default: runs/pipeline-<file name>)
    model: smollm2-135m-instruct           # every stage's `model` unless the stage sets one
    stages:                                # run in the order written
      sft:   {kind: sft, data: data_samples/sft_messages.jsonl, train: {max_length: 256}}
      dpo:   {kind: dpo, model: ${sft}, data: data_samples/preferences.jsonl}
      merge: {kind: merge, model: ${dpo}}
    report: {prompts: data_samples/prompts.jsonl, samples: 6, benchmark: data_samples/multiple_choice.jsonl, max_questions: 100}

Each stage is a ``kind`` (a ``posttrain`` command: sft, rm, dpo, rlhf, merge, eval) and the keys of that
command's config; the runner builds the same config object the command line builds and calls the same stage
function through the CLI's command table. ``${name}`` is stage ``name``'s output folder (default
``<output>/<name>``); ``${model}`` is the pipeline's model. Relative paths are relative to the current folder.

A stage is skipped when its key (a hash of its resolved config and of the content of its inputs; an upstream
stage's output counts by the hash recorded when it finished) matches the one in ``<output>/lineage.json`` and its
output is finished. A stage that was interrupted with the same key resumes from its newest checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from posttrain.config import ConfigError, field_docs, to_dict
from posttrain.lineage import MANIFEST, digest, hash_path, now, read_manifest, stage_inputs, stage_key, write_manifest
from posttrain.pipeline_spec import KINDS, Pipeline, Stage, command, load_pipeline

# ---------------------------------------------------------------------------------------------
# Planning and running
# ---------------------------------------------------------------------------------------------


def is_finished(stage: Stage) -> bool:
    marker = {"merge": "config.json"}.get(stage.kind, "posttrain.json")
    return (stage.output / marker).is_file()


def has_checkpoints(stage: Stage) -> bool:
    folder = stage.output / "checkpoints"
    # not temporary (".step-N.*") or set-aside ("incomplete-checkpoint-N") ones: resume cannot start from those
    return folder.is_dir() and any(p.is_dir() and not p.name.startswith((".", "incomplete-")) for p in folder.iterdir())


def decide(stage: Stage, manifest: dict, key: str | None, forced: bool) -> str:
    """'skip', 'resume' or 'run' for a stage, given its key (None: an upstream stage runs first)."""
    entry = manifest["stages"].get(stage.name, {})
    if forced or key is None or entry.get("hash") != key:
        return "run"
    if entry.get("status") == "done" and is_finished(stage):
        return "skip"
    if entry.get("status") == "running" and hasattr(stage.config, "resume") and has_checkpoints(stage) and not is_finished(stage):
        return "resume"
    return "run"


def command_line(stage: Stage) -> str:
    """The ``posttrain`` command that runs the same stage: the fields that differ from the defaults."""
    cls, _ = command(stage.kind)
    default, flags = to_dict(cls()), []
    current = to_dict(stage.config)
    for key, _, _ in field_docs(cls):
        value, base = current, default
        for part in key.split("."):
            value, base = value[part], base[part]
        if value != base and key != "resume":
            flags.append(f"--{key.replace('_', '-')} {value}")
    return f"posttrain {stage.kind} " + " ".join(flags)


def run_pipeline(pipeline: Pipeline, start_from: str | None = None, dry_run: bool = False) -> dict:
    """Run (or with ``dry_run`` only plan) the stages; returns the manifest."""
    from posttrain.stages.common import log

    names = [s.name for s in pipeline.stages]
    if start_from is not None and start_from not in names:
        raise ConfigError(f"--from {start_from}: no such stage; stages are {', '.join(names)}.")
    first_forced = names.index(start_from) if start_from else len(names)
    manifest = read_manifest(pipeline.output)
    manifest.setdefault("stages", {})
    plan: list[tuple[str, str]] = []  # (stage name, "skip" | "resume" | "run")

    if dry_run:
        print(f"pipeline {pipeline.file} -> {pipeline.output} (dry run: nothing is trained)")
    for number, stage in enumerate(pipeline.stages):
        forced = number >= first_forced
        inputs = stage_inputs(stage, manifest)
        if inputs is not None and any(dict(plan).get(s) != "skip" for s in _refs(stage)):
            inputs = None  # an upstream stage runs (again) first: its output hash is not known yet
        key = stage_key(stage, inputs) if inputs is not None else None
        action = decide(stage, manifest, key, forced)
        plan.append((stage.name, action))
        why = {"skip": "up to date, skipped", "resume": "interrupted: resuming from its newest checkpoint",
               "run": _why_run(stage, manifest, key, forced)}[action]
        print(f"[{number + 1}/{len(names)}] {stage.name} ({stage.kind}) -> {stage.output}: {why}")
        if dry_run:
            print(f"      {command_line(stage)}")
            continue
        if action == "skip":
            continue
        _run_stage(pipeline, manifest, stage, action == "resume", log)

    if not dry_run:
        write_pipeline_report(pipeline, manifest, dict(plan))
        write_manifest(pipeline.output, manifest)
        log(f"pipeline done: report in {pipeline.output / 'report.html'} (and report.md), lineage in {pipeline.output / MANIFEST}")
    return manifest


def _why_run(stage: Stage, manifest: dict, key: str | None, forced: bool) -> str:
    entry = manifest["stages"].get(stage.name)
    if forced:
        return "runs: forced by --from"
    if key is None:
        return "runs: after an input stage that runs first"
    if entry is None:
        return "runs: new"
    if entry.get("hash") != key:
        return "runs: its config or inputs changed"
    return "runs: its last run did not finish" if entry.get("status") != "done" else "runs: its output is missing"


def _refs(stage: Stage) -> set[str]:
    return {ref for refs in stage.upstream.values() for ref in refs}


def _run_stage(pipeline: Pipeline, manifest: dict, stage: Stage, resume: bool, log) -> None:
    inputs = stage_inputs(stage, manifest)
    key = stage_key(stage, inputs)
    if hasattr(stage.config, "resume"):
        stage.config.resume = resume
    if not resume:  # a fresh start: checkpoints and the finished marker of an older run must not be mistaken for ours
        shutil.rmtree(stage.output / "checkpoints", ignore_errors=True)
        (stage.output / "posttrain.json").unlink(missing_ok=True)
    entry = {"kind": stage.kind, "status": "running", "hash": key, "inputs": inputs, "config": to_dict(stage.config),
             "command": command_line(stage), "output": str(stage.output), "started": now(), "resumed": resume}
    manifest["stages"][stage.name] = entry
    manifest.update(pipeline=str(pipeline.file), output=str(pipeline.output), updated=now())
    write_manifest(pipeline.output, manifest)
    _, run = command(stage.kind)
    started = time.time()
    try:
        run()(stage.config)
    except BaseException as err:
        entry.update(status="failed" if not isinstance(err, KeyboardInterrupt) else "running", error=str(err) or type(err).__name__)
        write_manifest(pipeline.output, manifest)
        raise
    metrics_file = stage.output / "metrics.json"
    metrics = json.loads(metrics_file.read_text()).get("final", {}) if metrics_file.is_file() else {}
    entry.update(status="done", finished=now(), seconds=round(time.time() - started, 1), metrics=metrics,
                 output_hash=hash_path(stage.output))
    entry.pop("error", None)
    manifest["updated"] = now()
    write_manifest(pipeline.output, manifest)
    log(f"stage {stage.name} ({stage.kind}) finished in {entry['seconds']:.0f}s")


def pipeline_main(argv: list[str]) -> None:
    """``posttrain pipeline FILE [--dry-run] [--from STAGE] [--output DIR] [--STAGE.KEY VALUE ...]``."""
    from posttrain.commands import parse_flags

    if not argv or "-h" in argv or "--help" in argv:
        print(__doc__.split("\n\n", 1)[0] + "\n\nusage: posttrain pipeline FILE [--dry-run] [--from STAGE] [--output DIR] "
              "[--model NAME] [--STAGE.KEY VALUE ...] [--report.KEY VALUE ...]\n\n" + __doc__.split("\n\n", 1)[1])
        return
    _, flags = parse_flags(argv, positional="file")
    file = flags.pop("file", None)
    if not file:
        raise ConfigError("give the pipeline file: posttrain pipeline pipelines/dpo.yaml")
    start_from = flags.pop("from", None)
    dry_run = str(flags.pop("dry-run", flags.pop("dry_run", "false"))).lower() in ("true", "1", "yes")
    pipeline = load_pipeline(file, flags)
    run_pipeline(pipeline, start_from, dry_run)


# ---------------------------------------------------------------------------------------------
# The report page
# ---------------------------------------------------------------------------------------------

ACTIONS = {"skip": "up to date (skipped)", "resume": "resumed", "run": "ran"}


def sample_models(pipeline: Pipeline) -> dict[str, str]:
    """Models the report samples side by side: the base, the first SFT stage, the last stage that makes a model."""
    models = {"base": pipeline.model}
    sft = next((s for s in pipeline.stages if s.kind == "sft"), None)
    final = next((s for s in reversed(pipeline.stages) if KINDS[s.kind].makes in ("adapter", "model")), None)
    for stage in (sft, final):
        if stage is not None and str(stage.output) not in models.values():
            models[stage.name] = str(stage.output)
    return models


def _report_samples(pipeline: Pipeline, manifest: dict) -> tuple[list[str], list[dict], str]:
    """(labels, rows, reward model) of the side-by-side samples; cached in the manifest until a model changes."""
    from posttrain.data import load_prompts
    from posttrain.evaluate import side_by_side

    report = pipeline.report
    if not report.prompts or report.samples < 1:
        return [], [], ""
    models = sample_models(pipeline)
    rm_stage = next((s for s in reversed(pipeline.stages) if s.kind == "rm"), None)
    reward_model = str(rm_stage.output) if rm_stage else ""
    by_output = {str(s.output): manifest["stages"].get(s.name, {}).get("output_hash") for s in pipeline.stages}
    key = digest({"prompts": hash_path(report.prompts), "samples": report.samples, "tokens": report.max_new_tokens,
                   "models": {label: by_output.get(name, name) for label, name in models.items()},
                   "reward_model": by_output.get(reward_model, "")})
    cached = manifest.get("report", {})
    if cached.get("key") == key:
        return list(models), cached["rows"], reward_model
    prompts = [r["prompt"] for r in load_prompts(report.prompts).rows][:report.samples]
    rows = side_by_side(models, prompts, report.max_new_tokens, reward_model)
    manifest["report"] = {"key": key, "models": models, "reward_model": reward_model, "rows": rows}
    return list(models), rows, reward_model


def capability_models(pipeline: Pipeline) -> dict[str, str]:
    """The base and every stage that makes a model, for the capability section; a merge stage is left out
    (its weights are the adapter it merged, scored already)."""
    models = {"base": pipeline.model}
    for stage in pipeline.stages:
        if KINDS[stage.kind].makes in ("adapter", "model") and stage.kind != "merge":
            models[stage.name] = str(stage.output)
    return models


def _report_capability(pipeline: Pipeline, manifest: dict) -> list[tuple[str, Any]]:
    """The capability section: base vs each stage on report.benchmark; each model's scores are cached in the
    manifest until the model or the benchmark settings change."""
    from posttrain.capability import Scores, load_benchmark
    from posttrain.capability_report import capability_blocks, score_model

    report = pipeline.report
    if not report.benchmark:
        return []
    benchmark = load_benchmark(report.benchmark, report.shots, max_questions=report.max_questions)
    settings = {"benchmark": hash_path(report.benchmark), "shots": report.shots, "max_questions": report.max_questions}
    by_output = {str(s.output): manifest["stages"].get(s.name, {}).get("output_hash") for s in pipeline.stages}
    cache = manifest.setdefault("capability", {})
    results = {}
    for label, name in capability_models(pipeline).items():
        key = digest({**settings, "model": by_output.get(name, name)})
        if cache.get(label, {}).get("key") != key:
            scores = score_model(name, benchmark, label=label).to_dict()
            scores["loglikelihoods"] = []  # the manifest keeps what the report needs
            cache[label] = {"key": key, "model": name, "scores": scores}
        results[label] = Scores(**cache[label]["scores"])
    return capability_blocks(benchmark, report.shots, "cloze", results, reference="base")


def write_pipeline_report(pipeline: Pipeline, manifest: dict, plan: dict[str, str]) -> list[Path]:
    """report.md and report.html in the pipeline folder: stages, their plots and metrics, side-by-side samples."""
    from posttrain.evaluate import sample_table
    from posttrain.report import write_report_page

    blocks: list[tuple[str, Any]] = [
        ("p", f"Made by: posttrain pipeline {pipeline.file}. Each stage's inputs (with content hashes), resolved config, "
              f"times and metrics are in {MANIFEST}."),
        ("table", (["stage", "kind", "this run", "seconds", "finished", "output"],
                   [[s.name, s.kind, ACTIONS.get(plan.get(s.name, ""), "?"), manifest["stages"].get(s.name, {}).get("seconds", ""),
                     manifest["stages"].get(s.name, {}).get("finished", ""), str(s.output)] for s in pipeline.stages])),
    ]
    for stage in pipeline.stages:
        entry = manifest["stages"].get(stage.name, {})
        blocks += [("h2", f"{stage.name} ({stage.kind})"), ("p", entry.get("command") or command_line(stage))]
        metrics = [[k, v] for k, v in entry.get("metrics", {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if metrics:
            blocks.append(("table", (["metric", "value"], metrics)))
        blocks += [("image", png) for png in sorted(stage.output.glob("*.png"))]
    labels, rows, reward_model = _report_samples(pipeline, manifest)
    if rows:
        judged = f", each scored by the reward model {reward_model}" if reward_model else ""
        blocks += [("h2", "Sample responses"),
                   ("p", f"Greedy responses (at most {pipeline.report.max_new_tokens} new tokens) of {', '.join(labels)} "
                         f"to the first {len(rows)} prompts of {pipeline.report.prompts}{judged}."),
                   ("table", sample_table(rows, labels))]
    blocks += _report_capability(pipeline, manifest)
    return write_report_page(pipeline.output, "report", f"posttrain pipeline {pipeline.file.name}", blocks)
