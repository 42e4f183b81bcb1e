"""Stage configuration: nested dataclasses, loaded from YAML and dotted command-line overrides.

Every field carries a one-line ``doc`` in its metadata; ``posttrain <stage> --help`` prints them.
Unknown keys are an error that names the key and the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A bad configuration key or value; the message says where and how to fix it."""


def doc(default: Any, text: str, **kwargs) -> Any:
    """A dataclass field with a default and a one-line description."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": text}, **kwargs)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return field(default_factory=default, metadata={"doc": text}, **kwargs)
    return field(default=default, metadata={"doc": text}, **kwargs)


# ---------------------------------------------------------------------------------------------
# Sections shared by the stages
# ---------------------------------------------------------------------------------------------


@dataclass
class LoraSection:
    r: int = doc(16, "LoRA rank.")
    alpha: int = doc(32, "LoRA scaling numerator (the update is scaled by alpha / r).")
    dropout: float = doc(0.05, "Dropout on the LoRA input.")
    target_modules: str = doc("all-linear", "Modules that get adapters: 'all-linear' or a comma list, e.g. 'q_proj,v_proj'.")


@dataclass
class TrainSection:
    lr: float = doc(2e-4, "Peak learning rate (AdamW).")
    epochs: float = doc(1.0, "Passes over the training data (ignored when max_steps > 0).")
    max_steps: int = doc(-1, "Stop after this many optimizer steps; -1 means use epochs.")
    batch_size: int = doc(4, "Examples per device per forward pass.")
    grad_accum: int = doc(1, "Forward passes accumulated per optimizer step.")
    max_length: int = doc(512, "Longest tokenised example; longer rows are truncated and counted.")
    warmup_ratio: float = doc(0.03, "Share of steps spent warming the learning rate up.")
    scheduler: str = doc("cosine", "Learning-rate schedule (any transformers scheduler name).")
    weight_decay: float = doc(0.0, "AdamW weight decay.")
    max_grad_norm: float = doc(1.0, "Gradient clipping norm.")
    seed: int = doc(42, "Random seed for data order, dropout and initialisation.")
    logging_steps: int = doc(5, "Log metrics every N optimizer steps.")
    save_steps: int = doc(0, "Save a resumable checkpoint every N steps; 0 saves none mid-run.")
    eval_split: float = doc(0.0, "Share of the data held out for evaluation (0 disables).")
    eval_steps: int = doc(0, "Evaluate every N steps (0: only at the end, when eval_split > 0).")
    gradient_checkpointing: str = doc("auto", "'auto' (on with a GPU, off on CPU where it costs several times the speed), 'true' or 'false'.")
    precision: str = doc("auto", "'auto' (bf16 on a GPU that has it, fp32 on CPU), 'bf16', 'fp16' or 'fp32'.")


# ---------------------------------------------------------------------------------------------
# Stage configs
# ---------------------------------------------------------------------------------------------


@dataclass
class SFTConfig:
    model: str = doc("smollm2-135m-instruct", "Base model: a local folder, a hub id, or the alias 'smollm2-135m-instruct'.")
    data: str = doc("", "Training data: .jsonl, .json, .parquet or a datasets folder (see README: Data formats).")
    output: str = doc("", "Checkpoint folder to write.")
    eval_data: str = doc("", "Optional separate evaluation file (overrides train.eval_split).")
    resume: bool = doc(False, "Continue from the newest checkpoint under the output folder.")
    loss_on: Literal["assistant", "all"] = doc("assistant", "Train on assistant tokens only, or on the full sequence.")
    packing: bool = doc(False, "Pack several examples per row (padding-free, faster on long data).")
    lora: LoraSection = doc(LoraSection, "LoRA adapter settings.")
    train: TrainSection = doc(TrainSection, "Optimisation settings.")


def _train(text: str = "Optimisation settings.", **overrides) -> Any:
    """A TrainSection field whose defaults suit a particular stage."""
    return field(default_factory=lambda: TrainSection(**overrides), metadata={"doc": text})


@dataclass
class RewardConfig:
    model: str = doc("smollm2-135m-instruct", "Base model or SFT checkpoint to build the reward model on.")
    data: str = doc("", "Preference pairs: prompt/chosen/rejected rows (see README: Data formats).")
    output: str = doc("", "Checkpoint folder to write.")
    resume: bool = doc(False, "Continue from the newest checkpoint under the output folder.")
    lora: LoraSection = doc(LoraSection, "LoRA adapter settings for the body; the scalar head trains in full.")
    train: TrainSection = _train("Optimisation settings; defaults chosen with bench/quality.py: one pass over the pairs at "
                                 "batch 4 and lr 3e-4 (LoRA-sized), not TRL's 2 epochs at 1e-4.",
                                 lr=3e-4, epochs=1.0, batch_size=4, eval_split=0.1, max_length=384)


@dataclass
class ScoreConfig:
    model: str = doc("", "A reward-model checkpoint folder (from `posttrain rm`).")
    data: str = doc("", "Rows to score (prompt/completion or messages), or preference pairs for accuracy.")
    output: str = doc("", "Where to write the scored rows (.jsonl); default: <data>.scored.jsonl.")
    batch_size: int = doc(8, "Rows per forward pass.")
    max_length: int = doc(512, "Longest tokenised row; longer rows are cut from the left and counted.")


@dataclass
class DPOConfig:
    model: str = doc("smollm2-135m-instruct", "Base model, or an SFT checkpoint (its adapter is the start and the reference).")
    data: str = doc("", "Preference pairs: prompt/chosen/rejected rows (see README: Data formats).")
    output: str = doc("", "Checkpoint folder to write.")
    resume: bool = doc(False, "Continue from the newest checkpoint under the output folder.")
    beta: float = doc(0.1, "Strength of the implicit KL leash to the reference.")
    loss_type: str = doc("sigmoid", "DPO loss variant by TRL name: sigmoid, ipo, hinge, robust, ...")
    label_smoothing: float = doc(0.0, "Assumed share of flipped labels (robust / cDPO losses).")
    lora: LoraSection = doc(LoraSection, "LoRA adapter settings (ignored when starting from an SFT adapter).")
    train: TrainSection = _train("Optimisation settings; defaults chosen with bench/quality.py: one pass over the pairs at "
                                 "batch 4 and lr 2e-4 (LoRA-sized), not TRL's 3 epochs at 5e-5.",
                                 lr=2e-4, epochs=1.0, batch_size=4, eval_split=0.1, max_length=384, eval_steps=20)


@dataclass
class RolloutSection:
    batch_size: int = doc(8, "Prompts sampled per PPO step (per process).")
    max_new_tokens: int = doc(48, "Longest response in tokens.")
    max_prompt_length: int = doc(256, "Longest prompt in tokens; longer prompts are cut from the left and counted.")
    temperature: float = doc(0.7, "Sampling temperature for rollouts.")
    top_p: float = doc(1.0, "Nucleus sampling for rollouts (1.0 disables).")
    no_eos_penalty: float = doc(-1.0, "Score given to responses that never end (set to 0 to disable: no penalty).")
    penalise_no_eos: bool = doc(True, "Replace the score of responses that hit max_new_tokens without stopping.")


@dataclass
class PPOSection:
    steps: int = doc(40, "PPO steps (each: rollout, score, advantages, optimisation epochs).")
    lr: float = doc(3e-5, "Learning rate for the policy and critic adapters.")
    epochs: int = doc(2, "Optimisation passes over each rollout batch.")
    minibatch_size: int = doc(4, "Rollouts per optimizer minibatch.")
    grad_accum: int = doc(1, "Minibatches accumulated per optimizer step.")
    clip_eps: float = doc(0.2, "PPO ratio clip range.")
    value_clip_eps: float = doc(0.2, "Clip range for the value-function update.")
    vf_coef: float = doc(0.1, "Weight of the value loss.")
    entropy_coef: float = doc(0.0, "Weight of the entropy bonus.")
    max_grad_norm: float = doc(1.0, "Gradient clipping norm.")
    target_approx_kl: float = doc(0.0, "Stop an epoch early when approx-KL(old||new) passes this (0 disables).")
    gamma: float = doc(1.0, "Discount for GAE.")
    lam: float = doc(0.95, "GAE lambda.")
    whiten_advantages: bool = doc(True, "Normalise advantages per batch.")
    kl_coef: float = doc(0.05, "Initial beta of the KL penalty to the reference.")
    kl_estimator: Literal["k1", "k3"] = doc("k1", "Per-token KL estimator.")
    adaptive_kl: bool = doc(False, "Adapt beta toward target_kl (Ziegler et al. 2019).")
    target_kl: float = doc(2.0, "Target KL per response (nats) for the adaptive controller.")
    kl_horizon: int = doc(100, "Rollouts over which the adaptive beta moves: each step changes it by at most "
                               "0.2 x rollouts/horizon. Ziegler et al. used 10000 with batches of 512; 100 suits batches of 8.")
    normalize_rewards: bool = doc(False, "Normalise scores with running mean/std before the KL penalty.")
    reward_clip: float = doc(0.0, "Clip scores to [-c, c] (0 disables).")
    save_steps: int = doc(10, "Save a resumable checkpoint every N steps (0: only at the end).")
    seed: int = doc(42, "Random seed for prompt order, sampling and initialisation.")


@dataclass
class RLHFConfig:
    model: str = doc("smollm2-135m-instruct", "SFT checkpoint or model to start the policy from.")
    reward_model: str = doc("", "Reward-model checkpoint folder (from `posttrain rm`).")
    prompts: str = doc("", "Prompt file: rows with 'prompt' (text or messages).")
    output: str = doc("", "Checkpoint folder to write.")
    resume: bool = doc(False, "Continue exactly from the newest checkpoint under the output folder.")
    precision: Literal["auto", "bf16", "fp32"] = doc(
        "auto", "Storage of the shared frozen base: 'auto' is bf16 on a GPU or CPU with fast bf16 (AVX512-BF16/AMX), "
                "else fp32. Adapters, heads and optimizer state are always fp32.")
    lora: LoraSection = doc(LoraSection, "LoRA settings for the policy (and critic) adapters when starting fresh.")
    rollout: RolloutSection = doc(RolloutSection, "How responses are sampled.")
    ppo: PPOSection = doc(PPOSection, "The PPO optimisation.")


@dataclass
class EvalConfig:
    model: str = doc("", "The checkpoint or model to evaluate.")
    baseline: str = doc("", "The checkpoint or model to compare against (optional).")
    prompts: str = doc("", "Prompt file for generation (rows with 'prompt').")
    reward_model: str = doc("", "Reward-model checkpoint that judges responses.")
    data: str = doc("", "Preference pairs: also report pairwise accuracy of the model (implicit reward) or reward model.")
    output: str = doc("", "Folder for the evaluation report (default: next to the model).")
    max_prompts: int = doc(64, "Evaluate on at most this many prompts (and at most this many pairs with --data).")
    max_new_tokens: int = doc(64, "Longest response in tokens.")
    temperature: float = doc(0.0, "Sampling temperature (0: greedy, deterministic).")
    seed: int = doc(0, "Random seed.")


STAGE_ALIASES = {
    # short flags users expect, mapped to their dotted home
    "max_steps": "train.max_steps",
    "epochs": "train.epochs",
    "lr": "train.lr",
    "seed": "train.seed",
    "batch_size": "train.batch_size",
    "max_length": "train.max_length",
    "save_steps": "train.save_steps",
}


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def field_docs(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, str, Any]]:
    """(dotted name, doc, default) for every leaf field of a config dataclass. A section's defaults are the
    stage's own (RewardConfig's train.lr, not TrainSection's)."""
    rows = []
    hints = _resolved_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if defaults is not None:
            default = getattr(defaults, f.name)
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(field_docs(hints[f.name], name + ".", default))
        else:
            rows.append((name, f.metadata.get("doc", ""), default))
    return rows


def section_docs(cls: type) -> dict[str, str]:
    """The one-line doc of each top-level section of a config dataclass, by name (e.g. 'train')."""
    hints = _resolved_hints(cls)
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])}


def _resolved_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _nearest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.4)
    return f" Did you mean '{close[0]}'?" if close else ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}.")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}.")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}.")
        try:
            number = float(value) if tp is float else int(str(value), 0) if isinstance(value, str) else value
        except ValueError:
            raise ConfigError(f"{where}: expected {'a number' if tp is float else 'a whole number'}, got {value!r}.") from None
        if tp is int and isinstance(number, float):
            if not number.is_integer():
                raise ConfigError(f"{where}: expected a whole number, got {value!r}.")
            number = int(number)
        return tp(number)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a single value, got {value!r}.")
        return str(value)
    return value


def _apply(obj: Any, key: str, value: Any, where: str) -> None:
    """Set a dotted ``key`` on a nested config dataclass, checking the name and the type."""
    parts = key.replace("-", "_").split(".")
    target = obj
    for depth, part in enumerate(parts):
        hints = _resolved_hints(type(target))
        names = [f.name for f in dataclasses.fields(target)]
        if part not in names:
            valid = [name for name, _, _ in field_docs(type(obj))]
            raise ConfigError(f"{where}: unknown key '{key}'.{_nearest(key, valid)}")
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(hints[part]):
                if not isinstance(value, dict):
                    raise ConfigError(f"{where}: '{key}' is a section; give it keys, e.g. {key}.{dataclasses.fields(hints[part])[0].name}.")
                for sub_key, sub_value in value.items():
                    _apply(obj, f"{key}.{sub_key}", sub_value, where)
            else:
                setattr(target, part, _coerce(value, hints[part], f"{where}: {key}"))
        else:
            if not dataclasses.is_dataclass(hints[part]):
                raise ConfigError(f"{where}: '{'.'.join(parts[:depth + 1])}' has no sub-keys.")
            target = getattr(target, part)


def _yaml_items(path: Path) -> list[tuple[str, Any, int]]:
    """Top-level (key, value, line) items of a YAML mapping, with the line each key is on."""
    text = path.read_text()
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or node is None or not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level.")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
    return [(key, value, lines.get(key, 0)) for key, value in data.items()]


def apply_mapping(config: Any, mapping: dict[str, Any], where: str, lines: dict[str, int] | None = None) -> Any:
    """Apply a (possibly nested) mapping of keys to a config; ``where`` names the source in errors."""
    for key, value in mapping.items():
        line = (lines or {}).get(key)
        _apply(config, STAGE_ALIASES.get(key, key) if not hasattr(config, key) else key, value,
               f"{where}, line {line}" if line else where)
    return config


def load_config(cls: type, config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Any:
    """Build a ``cls`` config: defaults, then a YAML file, then dotted overrides (``{'lora.r': 8}``)."""
    config = cls()
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist.")
        items = _yaml_items(path)
        apply_mapping(config, {k: v for k, v, _ in items}, str(path), {k: line for k, _, line in items})
    for key, value in (overrides or {}).items():
        name = key.replace("-", "_")
        if "." not in name and not hasattr(config, name):
            name = STAGE_ALIASES.get(name, name)
        _apply(config, name, value, f"--{key}")
    return config


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def require(config: Any, *names: str) -> None:
    """Fail with the flag to pass when a required top-level field is empty."""
    for name in names:
        if not getattr(config, name):
            raise ConfigError(f"missing --{name.replace('_', '-')}: {_field_doc(type(config), name)}")


def _field_doc(cls: type, name: str) -> str:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("doc", "")
    return ""
