"""Reading and validating a pipelines/*.yaml file into stages with resolved configs (see pipeline.py for the format).

Every error names the file, the line and the key, and says how to fix it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from posttrain.config import AT_LEAST_1, NON_NEGATIVE, ConfigError, apply_mapping, doc, field_docs, yaml_error

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
    "rlhf": Kind("adapter", {"model": _MODEL, "reward_model": ("reward_model",), "prompts": (), "eval_prompts": ()}, ("prompts",)),
    "merge": Kind("model", {"model": ("adapter",)}, ("model",)),
    "eval": Kind("report", {"model": (*_MODEL, "reward_model"), "baseline": _MODEL, "reward_model": ("reward_model",),
                            "prompts": (), "data": ()}, ("model",)),
}
PRODUCTS = {"adapter": "an adapter", "reward_model": "a reward model", "model": "a standalone model", "report": "a report"}
DATA_LOADERS = {"sft.data": "load_sft", "sft.eval_data": "load_sft", "rm.data": "load_preferences", "dpo.data": "load_preferences",
                "rlhf.prompts": "load_prompts", "rlhf.eval_prompts": "load_prompts", "eval.prompts": "load_prompts",
                "eval.data": "load_preferences"}


@dataclass
class ReportSection:
    prompts: str = doc("", "Prompt file for the side-by-side samples of the base, SFT and final models (empty: none).")
    samples: int = doc(6, "How many prompts each model answers in the report.", valid=NON_NEGATIVE)
    max_new_tokens: int = doc(64, "Longest sampled response in tokens (greedy decoding).", valid=AT_LEAST_1)
    benchmark: str = doc("", "Multiple-choice file: the report's capability section scores the base and every stage on it (empty: none).")
    shots: int = doc(5, "Shots per benchmark question (from its dev split, as posttrain eval --benchmark).", valid=NON_NEGATIVE)
    max_questions: int = doc(0, "Score at most this many benchmark questions, taken in turn from each subject (0: all).", valid=NON_NEGATIVE)


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
    from posttrain.commands import COMMANDS

    entry = COMMANDS[kind]
    return entry.config(), entry.run


def load_pipeline(file: str | Path, overrides: dict[str, Any] | None = None) -> Pipeline:
    """Parse and check a pipeline file; every error names the line and key (or the flag) to fix."""
    file = Path(file)
    if not file.is_file():
        raise ConfigError(f"pipeline file {file} does not exist.")
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{file}: not a text file (byte {err.start + 1} is not UTF-8); a pipeline file is YAML text.") from None
    try:
        node, data = yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise yaml_error(file, err) from None
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
    if report.benchmark:  # read it now: a bad row fails before any training starts
        from posttrain.capability import load_benchmark
        from posttrain.data import DataError

        try:
            load_benchmark(report.benchmark, report.shots, max_questions=report.max_questions)
        except DataError as err:
            raise ConfigError(f"{at('report', 'benchmark')}: report.benchmark: {err}") from None
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
    if not isinstance(kind, str) or kind not in KINDS:
        import difflib

        close = difflib.get_close_matches(str(kind), KINDS, n=1)
        raise ConfigError(f"{at('stages', name, 'kind')}: stage '{name}': unknown kind {kind!r}; kinds are {', '.join(KINDS)}."
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

    from posttrain.models import ModelError
    from posttrain.run_folder import check_finished

    path = Path(value).expanduser()
    if key in ("model", "baseline", "reward_model") and path.is_dir():
        try:
            check_finished(path)  # a killed run's folder is not a model a stage can start from
        except ModelError as err:
            raise ConfigError(f"{place}: {key}: {err}") from None
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
