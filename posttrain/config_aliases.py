"""The names users bring from Hugging Face ``TrainingArguments``, TRL's configs and TRL's CLI, as aliases of
posttrain's own keys: ``--learning_rate 1e-4`` is ``--train.lr 1e-4``, ``lora_r: 8`` in YAML is ``lora.r: 8``.

An alias is a top-level name (a flag or a YAML key at the top of the file); some also translate the value
(``--bf16`` is ``--train.precision bf16``). An alias applies to a stage only when the stage has its target key.
A top-level name that is neither a posttrain key nor an alias, but is a field of the stage's TRL config, goes to
``train.extra`` (passed to TRL as it is; see stages/trl_args.py), so a TRL YAML file carries over whole.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Alias:
    key: str  # posttrain's dotted key
    convert: Callable[[Any], Any] | None = None  # the value in posttrain's terms


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def _precision(name: str) -> Callable[[Any], str]:
    return lambda value: name if _truthy(value) else "fp32"


def _bits(name: str) -> Callable[[Any], str]:
    return lambda value: name if _truthy(value) else "none"


def _loss_on(value: Any) -> str:
    return "assistant" if _truthy(value) else "all"


def _joined(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _warmup_share(value: Any) -> Any:
    """transformers 5 reads a warmup_steps below 1 as a share of the steps, which is posttrain's warmup_ratio."""
    from posttrain.config import ConfigError

    try:
        number = float(value)
    except (TypeError, ValueError):
        return value  # the target's own check names the bad value
    if number >= 1:
        raise ConfigError(f"warmup_steps {value}: posttrain sets the warmup as a share of the run's steps; pass "
                          "--train.warmup_ratio (e.g. 0.03), or warmup_steps below 1, which transformers reads as that share.")
    return number


def _resume(value: Any) -> bool:
    from posttrain.config import ConfigError

    if isinstance(value, bool) or str(value).lower() in ("true", "false", "1", "0", "yes", "no"):
        return _truthy(value)
    raise ConfigError(f"resume_from_checkpoint {value!r}: posttrain resumes from the newest complete checkpoint under "
                      "--output; pass --resume (or resume_from_checkpoint: true).")


def _grpo_loss(value: Any) -> str:
    """TRL GRPOConfig.loss_type -> posttrain's ppo.loss_aggregation (the reductions they name)."""
    from posttrain.config import ConfigError

    table = {"grpo": "sequence_mean", "dr_grpo": "token_sum", "bnpo": "token_mean", "dapo": "token_mean"}
    if str(value) not in table:
        raise ConfigError(f"loss_type {value!r}: the RL stage takes TRL's GRPO loss types {', '.join(table)} "
                          "(or --ppo.loss_aggregation token_mean|sequence_mean|token_sum).")
    return table[str(value)]


# posttrain's own short forms
SHORT = {
    "max_steps": Alias("train.max_steps"), "epochs": Alias("train.epochs"), "lr": Alias("train.lr"),
    "seed": Alias("train.seed"), "batch_size": Alias("train.batch_size"), "max_length": Alias("train.max_length"),
    "save_steps": Alias("train.save_steps"), "quantization": Alias("train.quantization"),
    "gradient_checkpointing": Alias("train.gradient_checkpointing"),
}

# TrainingArguments / TRL SFTConfig, RewardConfig, DPOConfig, and TRL's CLI (ModelConfig, ScriptArguments)
TRAINER = {
    "learning_rate": Alias("train.lr"),
    "num_train_epochs": Alias("train.epochs"),
    "per_device_train_batch_size": Alias("train.batch_size"),
    "gradient_accumulation_steps": Alias("train.grad_accum"),
    "warmup_ratio": Alias("train.warmup_ratio"),
    "warmup_steps": Alias("train.warmup_ratio", _warmup_share),
    "lr_scheduler_type": Alias("train.scheduler"),
    "weight_decay": Alias("train.weight_decay"),
    "max_grad_norm": Alias("train.max_grad_norm"),
    "logging_steps": Alias("train.logging_steps"),
    "eval_steps": Alias("train.eval_steps"),
    "max_seq_length": Alias("train.max_length"),  # TRL before 0.20
    "bf16": Alias("train.precision", _precision("bf16")),
    "fp16": Alias("train.precision", _precision("fp16")),
    "load_in_4bit": Alias("train.quantization", _bits("4bit")),
    "load_in_8bit": Alias("train.quantization", _bits("8bit")),
    "output_dir": Alias("output"),
    "resume_from_checkpoint": Alias("resume", _resume),
    "hub_model_id": Alias("push_to_hub"),
    "assistant_only_loss": Alias("loss_on", _loss_on),
    "completion_only_loss": Alias("loss_on", _loss_on),
    "model_name_or_path": Alias("model"),
    "dataset_name": Alias("data"),
    "dataset_config": Alias("data_subset"),
    "dataset_train_split": Alias("data_split"),
    "dataset_text_field": Alias("data_columns.text"),
    "chat_template_path": Alias("chat_template"),
    "lora_r": Alias("lora.r"),
    "lora_alpha": Alias("lora.alpha"),
    "lora_dropout": Alias("lora.dropout"),
    "lora_target_modules": Alias("lora.target_modules", _joined),
    "precompute_ref_log_probs": Alias("precompute_ref"),  # TRL DPOConfig
}

# TRL GRPOConfig / PPOConfig / RLOOConfig names with an obvious home in posttrain's RL stage
RL = {
    "learning_rate": Alias("ppo.lr"), "lr": Alias("ppo.lr"),
    "num_generations": Alias("rollout.group_size"), "rloo_k": Alias("rollout.group_size"),
    "max_completion_length": Alias("rollout.max_new_tokens"), "response_length": Alias("rollout.max_new_tokens"),
    "max_prompt_length": Alias("rollout.max_prompt_length"),
    "per_device_train_batch_size": Alias("rollout.batch_size"), "batch_size": Alias("rollout.batch_size"),
    "temperature": Alias("rollout.temperature"), "top_p": Alias("rollout.top_p"),
    "beta": Alias("ppo.kl_coef"), "kl_coef": Alias("ppo.kl_coef"), "kl_estimator": Alias("ppo.kl_estimator"),
    "num_ppo_epochs": Alias("ppo.epochs"), "num_iterations": Alias("ppo.epochs"), "epochs": Alias("ppo.epochs"),
    "max_steps": Alias("ppo.steps"), "steps": Alias("ppo.steps"),
    "gradient_accumulation_steps": Alias("ppo.grad_accum"),
    "cliprange": Alias("ppo.clip_eps"), "epsilon": Alias("ppo.clip_eps"),
    "cliprange_value": Alias("ppo.value_clip_eps"), "vf_coef": Alias("ppo.vf_coef"),
    "gamma": Alias("ppo.gamma"), "lam": Alias("ppo.lam"),
    "weight_decay": Alias("ppo.weight_decay"), "max_grad_norm": Alias("ppo.max_grad_norm"),
    "scale_rewards": Alias("ppo.scale_rewards"), "loss_type": Alias("ppo.loss_aggregation", _grpo_loss),
    "save_steps": Alias("ppo.save_steps"), "seed": Alias("ppo.seed"), "eval_steps": Alias("eval.every"),
    "bf16": Alias("precision", _precision("bf16")),
    "load_in_4bit": Alias("quantization", _bits("4bit")), "load_in_8bit": Alias("quantization", _bits("8bit")),
    "output_dir": Alias("output"), "hub_model_id": Alias("push_to_hub"),
    "resume_from_checkpoint": Alias("resume", _resume),
    "model_name_or_path": Alias("model"), "sft_model_path": Alias("model"),
    "reward_model_path": Alias("reward_model"), "dataset_name": Alias("prompts"),
    "dataset_config": Alias("data_subset"), "dataset_train_split": Alias("data_split"),
    "dataset_test_split": Alias("eval_split"),
    "lora_r": Alias("lora.r"), "lora_alpha": Alias("lora.alpha"), "lora_dropout": Alias("lora.dropout"),
    "lora_target_modules": Alias("lora.target_modules", _joined),
}

# names that look like an alias but are not one, and why (said instead of "unknown key")
NOT_ALIASES = {
    "RLHFConfig": {
        "num_train_epochs": "the RL stage runs a fixed number of steps, not passes over the prompts: set --ppo.steps "
                            "(one pass over N prompts is N * group_size / rollout.batch_size steps); --ppo.epochs is "
                            "the optimisation passes over each step's rollouts (TRL's num_iterations / num_ppo_epochs).",
    },
}

# the TRL config each stage builds, for train.extra
TRL_CONFIGS = {"SFTConfig": "SFTConfig", "RewardConfig": "RewardConfig", "DPOConfig": "DPOConfig"}


def _keys(cls: type) -> set[str]:
    from posttrain.config import field_docs

    return {name for name, _, _ in field_docs(cls)}


def _table(cls: type) -> dict[str, Alias]:
    if cls.__name__ == "RLHFConfig":
        return RL
    return {**SHORT, **TRAINER}


def aliases(cls: type) -> dict[str, Alias]:
    """Every alias that applies to the config class ``cls``: those whose target is one of its keys."""
    keys = _keys(cls)
    return {name: alias for name, alias in _table(cls).items()
            if name not in keys and (alias.key in keys or alias.key.rsplit(".", 1)[0] in keys)}


def resolve(cls: type, key: str, value: Any) -> tuple[str, Any]:
    """(posttrain key, value) for a top-level ``key`` as typed; unchanged when it is no alias."""
    from posttrain.config import ConfigError

    alias = aliases(cls).get(key)
    if alias is None:
        reason = NOT_ALIASES.get(cls.__name__, {}).get(key)
        if reason:
            raise ConfigError(f"'{key}' has no equivalent here: {reason}")
        return key, value
    return alias.key, alias.convert(value) if alias.convert else value


def names_of(cls: type) -> dict[str, list[str]]:
    """posttrain key -> the aliases that reach it, for --help."""
    out: dict[str, list[str]] = {}
    for name, alias in aliases(cls).items():
        out.setdefault(alias.key, []).append(name)
    return out


def trl_config_class(cls: type) -> type | None:
    """The TRL config class the stage of ``cls`` builds (imports TRL: only called when it is needed)."""
    name = TRL_CONFIGS.get(cls.__name__)
    if name is None:
        return None
    import trl

    return getattr(trl, name)


def trl_fields(cls: type) -> dict[str, Any]:
    """The fields of the stage's TRL config, name -> type, or {} for stages without one."""
    trl_cls = trl_config_class(cls)
    if trl_cls is None:
        return {}
    hints = typing.get_type_hints(trl_cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(trl_cls) if f.init}
