"""The table of ``posttrain`` commands, each a config class and the function it runs, and their flag syntax.

The table is data that ``cli`` (the command line), ``pipeline_spec`` (a pipeline's stages run exactly what the CLI
runs) and ``plan`` read; it imports no stage until a command runs."""

from __future__ import annotations

import os
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable

from posttrain.config import ConfigError, doc


@dataclass
class MergeConfig:
    model: str = doc("", "An adapter checkpoint folder to merge into its base model.")
    output: str = doc("", "Folder for the standalone merged model.")


@dataclass
class AdaptersConfig:
    model: str = doc("", "A checkpoint or model folder whose adapters to list.")


@dataclass
class PushConfig:
    folder: str = doc("", "A finished run's output folder (model card, adapter or model, tokenizer, metrics).", required=True)
    repo: str = doc("", "The hub repo to upload it to, org/name (created if it does not exist).", required=True)
    private: bool = doc(False, "Create the repo as a private one.")


def _push(config: PushConfig) -> None:
    from posttrain.config import require
    from posttrain.hub import push

    require(config, "folder", "repo")
    print(f"posttrain: uploaded {config.folder} to {push(config.folder, config.repo, config.private)}")


def _merge(config: MergeConfig) -> None:
    from posttrain.config import require
    from posttrain.models import is_adapter_folder, merge_and_save

    require(config, "model", "output")
    if not is_adapter_folder(config.model):
        raise ConfigError(f"{config.model} is not an adapter checkpoint (no adapter_config.json); nothing to merge.")
    merge_and_save(config.model, config.output)
    print(f"posttrain: merged model written to {config.output}")


def _adapters(config: AdaptersConfig) -> None:
    from posttrain.config import require
    from posttrain.models import is_adapter_folder, read_metadata

    require(config, "model")
    import json
    from pathlib import Path

    root = Path(config.model)
    found = [p for p in [root, *sorted(root.glob("*/"))] if is_adapter_folder(p)]
    if not found:
        print(f"{root}: no adapters")
    for path in found:
        adapter = json.loads((path / "adapter_config.json").read_text())
        meta = read_metadata(path) or read_metadata(root)
        print(f"{path}: {adapter.get('peft_type')} r={adapter.get('r')} alpha={adapter.get('lora_alpha')} "
              f"task={adapter.get('task_type')} stage={meta.get('stage', '?')} base={meta.get('base_model', adapter.get('base_model_name_or_path'))}")


@dataclass
class Command:
    summary: str
    config: Callable[[], type]
    run: Callable[[], Callable[[Any], Any]]
    positional: str | None = None  # fields that may be given without their flags, in order ("folder repo")
    raw: bool = False  # the command parses its own arguments (run receives the argument list)


def _lazy(module: str, name: str) -> Callable[[], Any]:
    def load():
        import importlib

        return getattr(importlib.import_module(module), name)

    return load


INVOCATION: ContextVar[str] = ContextVar("invocation", default="")  # the command line main() runs, for lock records


def _stage(module: str, name: str) -> Callable[[], Callable[[Any], Any]]:
    """A training stage, run holding its output folder: a folder that cannot be written, one another running
    posttrain process holds, ``--resume`` with no checkpoint or with settings other than the saved run's, and a
    fresh start over an earlier run's checkpoints fail at once, before the stage reads data or loads a model.
    Pipelines run stages through here too."""

    def load():
        run = _lazy(module, name)()

        def locked(config):
            from pathlib import Path

            from posttrain.stages.common import check_start, output_lock

            output = Path(config.output) if config.output else None
            if output is None or int(os.environ.get("RANK", "0")) != 0:
                return run(config)  # the stage names a missing --output; the processes of one launch share rank 0's lock
            with output_lock(output, INVOCATION.get()):
                check_start(output, config)
                result = run(config)
            if getattr(config, "push_to_hub", ""):
                from posttrain.hub import push

                print(f"posttrain: uploaded {output} to {push(output, config.push_to_hub)}")
            return result

        return locked

    return load


COMMANDS: dict[str, Command] = {
    "sft": Command("supervised fine-tuning of a LoRA adapter", _lazy("posttrain.config", "SFTConfig"),
                   _stage("posttrain.stages.sft", "run_sft")),
    "rm": Command("train a LoRA reward model on preference pairs", _lazy("posttrain.config", "RewardConfig"),
                  _stage("posttrain.stages.reward", "run_reward")),
    "score": Command("score rows (or preference pairs) with a reward model", _lazy("posttrain.config", "ScoreConfig"),
                     _lazy("posttrain.stages.score", "run_score"), positional="model"),
    "dpo": Command("direct preference optimisation of a LoRA adapter", _lazy("posttrain.config", "DPOConfig"),
                   _stage("posttrain.stages.dpo", "run_dpo")),
    "rlhf": Command("online RL (PPO, GRPO, RLOO, REINFORCE++) against reward models and reward functions",
                    _lazy("posttrain.config", "RLHFConfig"),
                    _stage("posttrain.stages.rlhf", "run_rlhf")),
    "plan": Command("the memory a training stage will need on this device, before anything loads", lambda: None,
                    _lazy("posttrain.plan", "plan_main"), raw=True),
    "pipeline": Command("run a pipelines/*.yaml file (SFT -> RM -> PPO, SFT -> DPO)", lambda: None,
                        _lazy("posttrain.pipeline", "pipeline_main"), raw=True),
    "eval": Command("compare a checkpoint with a baseline: reward, win-rate, length, samples, k-shot capability",
                    _lazy("posttrain.config", "EvalConfig"), _lazy("posttrain.evaluate", "run_eval")),
    "chat": Command("talk to a model or checkpoint", _lazy("posttrain.chat", "ChatConfig"),
                    _lazy("posttrain.chat", "run_chat"), positional="model"),
    "merge": Command("merge an adapter into its base and save a standalone model", lambda: MergeConfig,
                     lambda: _merge, positional="model"),
    "adapters": Command("list the adapters in a checkpoint folder", lambda: AdaptersConfig,
                        lambda: _adapters, positional="model"),
    "push": Command("upload a finished run folder to the Hugging Face Hub", lambda: PushConfig,
                    lambda: _push, positional="folder repo"),
}


def parse_flags(argv: list[str], positional: str | None) -> tuple[str | None, dict[str, Any]]:
    """``--key value`` / ``--key=value`` / bare ``--flag`` (true) pairs; returns (config file, overrides)."""
    overrides: dict[str, Any] = {}
    config_file = None
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            free = [name for name in (positional or "").split() if name not in overrides]
            if free:
                overrides[free[0]] = token
                i += 1
                continue
            raise ConfigError(f"unexpected argument '{token}'; options are given as --key value.")
        key, _, value = token[2:].partition("=")
        if not _:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value = argv[i + 1]
                i += 1
            else:
                value = "true"
        if key == "config":
            config_file = value
        else:
            overrides[key] = value
        i += 1
    return config_file, overrides
