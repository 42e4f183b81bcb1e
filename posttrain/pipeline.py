"""Chain stages from a pipelines/*.yaml file and keep a lineage manifest of what ran on what.

A pipeline file::

    output: runs/pipeline-dpo              # the pipeline's folder (default: runs/pipeline-<file name>)
    model: smollm2-135m-instruct           # every stage's `model` unless the stage sets one
    stages:                                # run in the order written
      sft:   {kind: sft, data: data_samples/sft_messages.jsonl, train: {max_length: 256}}
      dpo:   {kind: dpo, model: ${sft}, data: data_samples/preferences.jsonl}
      merge: {kind: merge, model: ${dpo}}
    report: {prompts: data_samples/prompts.jsonl, samples: 6}

Each stage is a ``kind`` (a ``posttrain`` command: sft, rm, dpo, rlhf, merge, eval) and the keys of that
command's config; the runner builds the same config object the command line builds and calls the same stage
function through the CLI's command table. ``${name}`` is stage ``name``'s output folder (default
``<output>/<name>``); ``${model}`` is the pipeline's model. Relative paths are relative to the current folder.

A stage is skipped when its key (a hash of its resolved config and of the content of its inputs; an upstream
stage's output counts by the hash recorded when it finished) matches the one in ``<output>/lineage.json`` and its
output is finished. A stage that was interrupted with the same key resumes from its newest checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from posttrain.config import ConfigError, apply_mapping, doc, field_docs, to_dict

MANIFEST = "lineage.json"
REFERENCE = re.compile(r"\$\{([^}]*)\}")
TOP_KEYS = ("output", "model", "stages", "report")
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class Kind:
    """What a stage kind reads and makes: input fields (and the upstream products each accepts), required fields."""

    makes: str  # "adapter", "reward_model", "model" (a standalone folder) or "report"
    inputs: dict[str, tuple[str, ...]]  # field -> products of upstream stages it may name; () for data files
    required: tuple[str, ...]


_MODEL = ("adapter", "model")
KINDS = {
    "sft": Kind("adapter", {"model": _MODEL, "data": (), "eval_data": ()}, ("data",)),
    "rm": Kind("reward_model", {"model": _MODEL, "data": ()}, ("data",)),
    "dpo": Kind("adapter", {"model": _MODEL, "data": ()}, ("data",)),
    "rlhf": Kind("adapter", {"model": _MODEL, "reward_model": ("reward_model",), "prompts": ()}, ("reward_model", "prompts")),
    "merge": Kind("model", {"model": ("adapter",)}, ("model",)),
    "eval": Kind("report", {"model": (*_MODEL, "reward_model"), "baseline": _MODEL, "reward_model": ("reward_model",),
                            "prompts": (), "data": ()}, ("model",)),
}
PRODUCTS = {"adapter": "an adapter", "reward_model": "a reward model", "model": "a standalone model", "report": "a report"}
DATA_LOADERS = {"sft.data": "load_sft", "sft.eval_data": "load_sft", "rm.data": "load_preferences", "dpo.data": "load_preferences",
                "rlhf.prompts": "load_prompts", "eval.prompts": "load_prompts", "eval.data": "load_preferences"}


@dataclass
class ReportSection:
    prompts: str = doc("", "Prompt file for the side-by-side samples of the base, SFT and final models (empty: none).")
    samples: int = doc(6, "How many prompts each model answers in the report.")
    max_new_tokens: int = doc(64, "Longest sampled response in tokens (greedy decoding).")


@dataclass
class Stage:
    name: str
    kind: str
    config: Any  # the command's config object, references resolved
    line: int
    upstream: dict[str, list[str]] = field(default_factory=dict)  # input field -> stage names it refers to
    templates: dict[str, str] = field(default_factory=dict)  # input field -> its value before resolution

    @property
    def output(self) -> Path:
        return Path(self.config.output)


@dataclass
class Pipeline:
    file: Path
    output: Path
    model: str
    stages: list[Stage]
    report: ReportSection


# ---------------------------------------------------------------------------------------------
# Reading and validating a pipeline file
# ---------------------------------------------------------------------------------------------


def _key_lines(node: yaml.Node, path: tuple = (), lines: dict | None = None) -> dict[tuple, int]:
    """The line of every mapping key in a composed YAML tree, by key path."""
    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines[path + (key.value,)] = key.start_mark.line + 1
            _key_lines(value, path + (key.value,), lines)
    return lines


def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            items.extend(_flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


def command(kind: str):
    """(config class, stage function) of a ``posttrain`` command: the pipeline runs exactly what the CLI runs."""
    from posttrain.cli import COMMANDS

    entry = COMMANDS[kind]
    return entry.config(), entry.run


def load_pipeline(file: str | Path, overrides: dict[str, Any] | None = None) -> Pipeline:
    """Parse and check a pipeline file; every error names the line and key (or the flag) to fix."""
    file = Path(file)
    if not file.is_file():
        raise ConfigError(f"pipeline file {file} does not exist.")
    text = file.read_text()
    try:
        node, data = yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping with keys {', '.join(TOP_KEYS)}.")
    lines = _key_lines(node)

    def at(*path: str) -> str:
        for depth in range(len(path), 0, -1):
            if path[:depth] in lines:
                return f"{file}, line {lines[path[:depth]]}"
        return str(file)

    overrides = dict(overrides or {})
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{at(key)}: unknown key '{key}'; a pipeline file has {', '.join(TOP_KEYS)}.")
    output = Path(str(overrides.pop("output", None) or data.get("output") or f"runs/pipeline-{file.stem}"))
    model = str(overrides.pop("model", None) or data.get("model") or "smollm2-135m-instruct")
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, dict) or not raw_stages:
        raise ConfigError(f"{at('stages')}: 'stages' must map stage names to stages, e.g. sft: {{kind: sft, data: FILE}}.")

    # overrides: --STAGE.KEY value (or --report.KEY value)
    stage_overrides: dict[str, dict[str, Any]] = {name: {} for name in raw_stages}
    report_overrides: dict[str, Any] = {}
    for flag, value in overrides.items():
        head, _, rest = flag.replace("-", "_").partition(".")
        if head == "report" and rest:
            report_overrides[rest] = value
        elif head in raw_stages and rest:
            if rest == "kind":
                raise ConfigError(f"--{flag}: a stage's kind cannot be overridden; edit {file}.")
            stage_overrides[head][rest] = value
        else:
            raise ConfigError(f"--{flag}: give --STAGE.KEY VALUE with a stage of {file} ({', '.join(raw_stages)}), "
                              "or --report.KEY, --output, --model, --from STAGE, --dry-run.")

    stages: list[Stage] = []
    names = list(raw_stages)
    for name, body in raw_stages.items():
        stages.append(_build_stage(name, body, names, stages, output, model, stage_overrides[name], lines, at))

    report = ReportSection()
    raw_report = data.get("report") or {}
    if not isinstance(raw_report, dict):
        raise ConfigError(f"{at('report')}: 'report' must be a mapping, e.g. {{prompts: FILE, samples: 6}}.")
    for key, value in _flatten(raw_report):
        apply_mapping(report, {key: value}, f"{at('report', *key.split('.'))}: report")
    apply_mapping(report, report_overrides, "--report")
    if report.prompts and not Path(report.prompts).exists():
        raise ConfigError(f"{at('report', 'prompts')}: report.prompts: {report.prompts} does not exist.")
    return Pipeline(file, output, model, stages, report)


def _build_stage(name: str, body: Any, names: list[str], earlier: list[Stage], output: Path, model: str,
                 overrides: dict[str, Any], lines: dict[tuple, int], at) -> Stage:
    line = lines.get(("stages", name), 0)
    where = f"{at('stages', name)}: stage '{name}'"
    if not re.fullmatch(r"[A-Za-z_]\w*", str(name)) or name in ("model", "report"):
        raise ConfigError(f"{where}: a stage name is letters, digits and '_' (and not 'model' or 'report').")
    if not isinstance(body, dict) or "kind" not in body:
        raise ConfigError(f"{where}: a stage needs a kind ({', '.join(KINDS)}), e.g. {name}: {{kind: sft, data: FILE}}.")
    kind = body["kind"]
    if kind not in KINDS:
        import difflib

        close = difflib.get_close_matches(str(kind), KINDS, n=1)
        raise ConfigError(f"{at('stages', name, 'kind')}: stage '{name}': unknown kind '{kind}'; kinds are {', '.join(KINDS)}."
                          + (f" Did you mean '{close[0]}'?" if close else ""))
    spec = KINDS[kind]
    cls, _ = command(kind)
    config = cls()
    config.output = str(output / name)
    if "model" in spec.inputs and kind not in ("merge", "eval"):
        config.model = model
    done = {s.name: s for s in earlier}
    upstream: dict[str, list[str]] = {}
    templates: dict[str, str] = {}

    def resolve(key: str, value: Any, place: str) -> Any:
        if not isinstance(value, str) or "${" not in value:
            return value

        def substitute(match: re.Match) -> str:
            ref = match.group(1)
            if ref == "model":
                return model
            if ref in done:
                upstream.setdefault(key, []).append(ref)
                return str(done[ref].output)
            if ref in names:
                raise ConfigError(f"{place}: '{key}' refers to stage '{ref}', which runs later; stages run in the order written.")
            raise ConfigError(f"{place}: '{key}' refers to '${{{ref}}}', but there is no stage named '{ref}' "
                              f"(stages: {', '.join(names)}; ${{model}} is the pipeline's model).")

        resolved = REFERENCE.sub(substitute, value)
        templates[key] = value
        return resolved

    places: dict[str, str] = {}
    items = [(k, v, f"{at('stages', name, *k.split('.'))}: stage '{name}'") for k, v in _flatten(body) if k != "kind"]
    items += [(k, v, f"--{name}.{k}") for k, v in overrides.items()]
    for key, value, place in items:
        apply_mapping(config, {key: resolve(key.replace("-", "_"), value, place)}, place)
        places[key.replace("-", "_")] = place
    places.setdefault("model", f"{at('model')}: stage '{name}'" if "model" in lines and kind not in ("merge", "eval") else where)

    # inputs: upstream products must fit, files must exist, data must parse
    for key in spec.required:
        if not getattr(config, key):
            raise ConfigError(f"{where}: missing '{key}': {dict((n, d) for n, d, _ in field_docs(cls)).get(key, '')}")
    for key, accepts in spec.inputs.items():
        value, place = getattr(config, key), places.get(key, where)
        if not value:
            continue
        for ref in upstream.get(key, []):
            makes = KINDS[done[ref].kind].makes
            if makes not in accepts:
                wanted = " or ".join(PRODUCTS[a] for a in accepts) if accepts else "a data file"
                raise ConfigError(f"{place}: '{key}' refers to stage '{ref}' ({done[ref].kind}), whose output is {PRODUCTS[makes]}; "
                                  f"a {kind} stage's {key} must be {wanted}.")
        if key in upstream:
            continue
        _check_input(kind, key, value, place)
    if kind == "rlhf":
        from posttrain.stages.rlhf import check_config

        try:
            check_config(config)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    return Stage(name, kind, config, line, upstream, templates)


def _check_input(kind: str, key: str, value: str, place: str) -> None:
    from posttrain.models import EMBEDDED_MODELS

    path = Path(value).expanduser()
    if key in ("model", "baseline"):
        if value in EMBEDDED_MODELS or path.exists() or (HUB_ID.match(value) and not value.startswith(".")):
            return
        raise ConfigError(f"{place}: {key}: {value} is not a folder, the embedded model or a hub id (owner/name).")
    if not path.exists():
        raise ConfigError(f"{place}: {key}: {value} does not exist.")
    loader = DATA_LOADERS.get(f"{kind}.{key}")
    if loader:  # read the data now: a bad row fails before any training starts
        import posttrain.data

        try:
            getattr(posttrain.data, loader)(value)
        except posttrain.data.DataError as err:
            raise ConfigError(f"{place}: {key}: {err}") from None


# ---------------------------------------------------------------------------------------------
# Content hashes and the lineage manifest
# ---------------------------------------------------------------------------------------------

SKIP_IN_HASH = {"checkpoints", ".writing", "__pycache__"}
_hash_cache: dict[tuple, str] = {}


def hash_path(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a folder's relative file names and contents (checkpoints left out)."""
    path = Path(path)
    if path.is_file():
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _hash_cache:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            _hash_cache[key] = digest.hexdigest()
        return _hash_cache[key]
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_IN_HASH)
        for name in sorted(files):
            file = Path(root, name)
            digest.update(f"{file.relative_to(path).as_posix()}\0{hash_path(file)}\0".encode())
    return digest.hexdigest()


def stage_inputs(stage: Stage, manifest: dict) -> dict[str, dict] | None:
    """Each input with its hash; None when an upstream stage has no finished output recorded yet."""
    inputs = {}
    for key in KINDS[stage.kind].inputs:
        value = getattr(stage.config, key)
        if not value:
            continue
        if key in stage.upstream:
            hashes = {}
            for ref in stage.upstream[key]:
                entry = manifest["stages"].get(ref, {})
                if entry.get("status") != "done" or not entry.get("output_hash"):
                    return None
                hashes[ref] = entry["output_hash"]
            inputs[key] = {"path": value, "from": stage.templates[key], "hash": _digest(hashes)}
        elif Path(value).expanduser().exists():
            inputs[key] = {"path": value, "hash": hash_path(Path(value).expanduser())}
        else:
            inputs[key] = {"name": value}  # the embedded model or a hub id: its name is its identity
    return inputs


def stage_key(stage: Stage, inputs: dict[str, dict]) -> str:
    """Hash of the resolved config with every input replaced by its content hash (output and resume left out)."""
    config = to_dict(stage.config)
    for key in ("output", "resume"):
        config.pop(key, None)
    for key, record in inputs.items():
        config[key] = record.get("hash", record.get("name"))
    return _digest({"kind": stage.kind, "config": config})


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def read_manifest(output: Path) -> dict:
    path = output / MANIFEST
    if path.is_file():
        return json.loads(path.read_text())
    return {"stages": {}}


def write_manifest(output: Path, manifest: dict) -> None:
    """Write lineage.json atomically: a kill mid-write leaves the previous manifest."""
    output.mkdir(parents=True, exist_ok=True)
    tmp = output / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    os.replace(tmp, output / MANIFEST)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Planning and running
# ---------------------------------------------------------------------------------------------


def is_finished(stage: Stage) -> bool:
    marker = {"merge": "config.json"}.get(stage.kind, "posttrain.json")
    return (stage.output / marker).is_file()


def has_checkpoints(stage: Stage) -> bool:
    folder = stage.output / "checkpoints"
    return folder.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())


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
             "command": command_line(stage), "output": str(stage.output), "started": _now(), "resumed": resume}
    manifest["stages"][stage.name] = entry
    manifest.update(pipeline=str(pipeline.file), output=str(pipeline.output), updated=_now())
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
    entry.update(status="done", finished=_now(), seconds=round(time.time() - started, 1), metrics=metrics,
                 output_hash=hash_path(stage.output))
    entry.pop("error", None)
    manifest["updated"] = _now()
    write_manifest(pipeline.output, manifest)
    log(f"stage {stage.name} ({stage.kind}) finished in {entry['seconds']:.0f}s")


def pipeline_main(argv: list[str]) -> None:
    """``posttrain pipeline FILE [--dry-run] [--from STAGE] [--output DIR] [--STAGE.KEY VALUE ...]``."""
    from posttrain.cli import parse_flags

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
    key = _digest({"prompts": hash_path(report.prompts), "samples": report.samples, "tokens": report.max_new_tokens,
                   "models": {label: by_output.get(name, name) for label, name in models.items()},
                   "reward_model": by_output.get(reward_model, "")})
    cached = manifest.get("report", {})
    if cached.get("key") == key:
        return list(models), cached["rows"], reward_model
    prompts = [r["prompt"] for r in load_prompts(report.prompts).rows][:report.samples]
    rows = side_by_side(models, prompts, report.max_new_tokens, reward_model)
    manifest["report"] = {"key": key, "models": models, "reward_model": reward_model, "rows": rows}
    return list(models), rows, reward_model


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
    return write_report_page(pipeline.output, "report", f"posttrain pipeline {pipeline.file.name}", blocks)
