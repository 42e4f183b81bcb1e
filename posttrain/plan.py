"""``posttrain plan <stage> [flags]``: the memory a stage will need on the chosen device, before anything loads,
and what to change when it will not fit. The parts and their arithmetic are in footprint.py.

    posttrain plan sft --train.batch_size 8 --train.max_length 1024 --device cuda --memory 24
    posttrain plan rlhf --model runs/sft --reward-model runs/rm --prompts data_samples/prompts.jsonl
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from posttrain.attention import attention_for
from posttrain.footprint import (
    FIT_SHARE,
    LEAN_CHUNK_ELEMENTS,
    LEAN_CHUNKS,
    GiB,
    TRL_TILE_TOKENS,
    TRL_TILE_VOCAB,
    TRL_TILES,
    Plan,
    Shape,
    base_bytes,
    device_capacity,
    layer_bytes,
    read_shape,
    runtime_bytes,
)

STAGES = ("sft", "rm", "dpo", "rlhf")
ENGINES = ("ddp", "fsdp", "zero2", "zero3")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def _adapter_shape(model: str, r: int, targets: str) -> tuple[int, str]:
    """The LoRA rank and targets that will train: the checkpoint's own when ``model`` is an adapter folder."""
    file = Path(model, "adapter_config.json")
    if not file.is_file():
        return r, targets
    saved = json.loads(file.read_text())
    found = saved["target_modules"]
    return saved["r"], found if isinstance(found, str) else ",".join(found)


def _first_layers(shape: Shape, layers: int) -> Shape:
    """The shape of a body cut to its first ``layers`` decoder layers (0, or as many as it has: all of them)."""
    return dataclasses.replace(shape, layers=layers) if 0 < layers < shape.layers else shape


def _reward_layers(config: Any) -> int:
    """How many decoder layers a critic made from the RL stage's reward model reads: its checkpoint's
    reward_layers where it shares the policy's base (elsewhere the critic starts fresh, over every layer; 0: all)."""
    if not config.reward_model or not Path(config.reward_model, "posttrain.json").is_file():
        return 0
    from posttrain.models import adapter_base, is_adapter_folder
    from posttrain.stages.reward_model import checkpoint_layers
    from posttrain.stages.rlhf_roles import same_base

    policy_base = adapter_base(config.model) if is_adapter_folder(config.model) else config.model
    if not same_base(adapter_base(config.reward_model), policy_base):
        return 0
    return checkpoint_layers(config.reward_model)


def _activations(shape: Shape, tokens: int, per_layer: float, act: int, checkpointing: bool) -> float:
    """A graph's saved tensors for ``tokens`` tokens; with checkpointing, each layer's input (the residual stream,
    ``act`` bytes) plus one layer's full set while it is recomputed in the backward pass."""
    if checkpointing:
        return tokens * (shape.layers * shape.hidden * act + per_layer)
    return tokens * shape.layers * per_layer


def _sharded(items: dict[str, float], engine: str, processes: int) -> dict[str, float]:
    """Per-process memory under an engine: ZeRO-2 splits gradients and optimizer state, FSDP and ZeRO-3 also the
    weights (activations are per process either way)."""
    if processes <= 1 or engine == "ddp":
        return items
    split = {"zero2": ("adapter gradients + AdamW",), "fsdp": ("base weights", "adapters", "adapter gradients + AdamW"),
             "zero3": ("base weights", "adapters", "adapter gradients + AdamW")}[engine]
    return {k: v / processes if k.split(" (")[0] in split else v for k, v in items.items()}


def estimate(stage: str, config: Any, device: str, *, runtime: int | None = None, capacity: int | None = None,
             checkpointing: bool | None = None, engine: str = "ddp", processes: int = 1,
             prompt_tokens: int | None = None, advise: bool = True) -> Plan:
    """The memory of ``stage`` run with ``config`` on ``device`` ("cpu" or "cuda"), part by part.

    ``checkpointing`` None: as the config resolves it on that device. ``prompt_tokens`` (rlhf): the longest prompt,
    when known (default: rollout.max_prompt_length). ``runtime``/``capacity``: given instead of measured (tests)."""
    shape = read_shape(config.model)
    runtime = runtime_bytes(device) if runtime is None else runtime
    capacity = device_capacity(device) if capacity is None else capacity
    if checkpointing is None:
        setting = config.gradient_checkpointing if stage == "rlhf" else config.train.gradient_checkpointing
        checkpointing = setting == "true" or (setting == "auto" and device == "cuda" and
                                              not estimate(stage, config, device, runtime=runtime, capacity=capacity,
                                                           checkpointing=False, engine=engine, processes=processes,
                                                           prompt_tokens=prompt_tokens, advise=False).fits)
    if stage == "rlhf":
        items, notes, knobs = _rlhf(shape, config, device, checkpointing, prompt_tokens)
    else:
        items, notes, knobs = _trl(stage, shape, config, device, checkpointing)
    items = {"runtime": float(runtime), **_sharded(items, engine, processes)}
    plan = Plan(stage, f"{device}" + (f", {processes} processes ({engine})" if processes > 1 else ""), items, capacity, notes)
    if advise and not plan.fits:
        plan.advice = _advice(stage, config, device, checkpointing, knobs, engine, processes, runtime, capacity,
                              prompt_tokens)
    return plan


def _trl(stage: str, shape: Shape, config: Any, device: str, checkpointing: bool):
    """SFT, reward model and DPO on TRL's trainers: one trained adapter; rows as long as
    train.max_length. DPO and the reward model run chosen and rejected rows in one batch (2 x batch_size). The reward
    model keeps the base's first ``layers`` decoder layers (posttrain rm --layers): the rest are never loaded."""
    train, lora = config.train, config.lora
    if stage == "rm":
        shape = _first_layers(shape, config.layers)
    precision = train.precision if train.precision != "auto" else ("bf16" if device == "cuda" else "fp32")
    weight = DTYPE_BYTES[precision]
    # on a GPU the trainer's autocast matches the weights' dtype; on a CPU fp32, an upper bound where the CPU's bf16
    # autocast (AVX512-BF16/AMX, see stages.trl_args) keeps most activations in bf16
    act = weight
    r, targets = _adapter_shape(config.model, lora.r, lora.target_modules)
    rows = train.batch_size * (1 if stage == "sft" else 2)
    tokens = rows * train.max_length
    # peft casts each adapter's input to fp32, then autocast back: a copy per adapter, as dropout's output is
    copies = lora.dropout > 0 or act == 2
    mask = (act if device == "cpu" else 1) if lora.dropout > 0 else 0
    per_layer = layer_bytes(shape, targets, r, act=act, lora_copies=copies, mask=mask,
                            attention=attention_for(device, train.max_length, "sdpa"), seq=train.max_length)
    lora_params = shape.lora_params(r, targets)
    quant = f", {train.quantization}" if train.quantization != "none" else ""
    items = {
        f"base weights ({precision}{quant})": base_bytes(shape, weight, train.quantization),
        "adapters (fp32)": 4 * lora_params,
        "adapter gradients + AdamW": 12 * lora_params,
        f"activations ({rows} rows x {train.max_length} tokens, checkpointing {'on' if checkpointing else 'off'})":
            _activations(shape, tokens, per_layer, act, checkpointing),
    }
    if stage != "rm":  # the reward model reads one hidden state per row, never the vocabulary
        # never the whole (tokens, vocab) logits at once: TRL's fused LM head takes tiles of them on a GPU and for
        # a scaled or soft-capped head, posttrain.lm_head chunks of rows on a CPU (see footprint)
        if device == "cpu" and shape.plain_head:
            chunk = min(tokens * shape.vocab, max(LEAN_CHUNK_ELEMENTS, shape.vocab)) * 4
            part, logits = "logits (posttrain.lm_head chunks)", LEAN_CHUNKS * chunk
        else:
            tile = min(tokens, TRL_TILE_TOKENS) * min(shape.vocab, TRL_TILE_VOCAB) * 4
            part, logits = "logits (fused LM head tiles)", TRL_TILES[device] * tile
        items[part] = logits
        if device == "cpu":
            items["allocator: the previous step's freed peak (CPU)"] = logits
    if stage == "dpo" and Path(config.model, "adapter_config.json").is_file():
        items["adapters (fp32)"] *= 2  # TRL's frozen copy "ref" of the SFT adapter, the reference
    kept = f" (its first {shape.layers} decoder layers, --layers)" if stage == "rm" and 0 < config.layers else ""
    notes = [f"{shape.params / 1e6:.1f} M base parameters{kept}, {lora_params / 1e6:.2f} M LoRA (r={r}, {targets}); "
             "rows at train.max_length (an upper bound: batches are padded to their longest row)"]
    return items, notes, {"batch": "train.batch_size", "length": "train.max_length"}


def _rlhf(shape: Shape, config: Any, device: str, checkpointing: bool, prompt_tokens: int | None):
    """The RL stage: one base in bf16 (a GPU, or a CPU with fast bf16; else fp32) with every role an adapter on it;
    policy and critic train from one stacked pass per minibatch, or, a critic made from a reward model of its first
    N layers (posttrain rm --layers), the critic from a pass of its own over those N, whose LoRA alone it trains."""
    import torch

    from posttrain.models import frozen_base_dtype, is_adapter_folder

    rollout, ppo = config.rollout, config.ppo
    base_dtype = frozen_base_dtype(torch.device(device), config.precision) if device == "cpu" else \
        {"fp32": torch.float32}.get(config.precision, torch.bfloat16)
    weight = 2 if base_dtype == torch.bfloat16 else 4
    act = weight  # adapters' products run under bf16 autocast with a bf16 base
    critic = config.algo == "ppo"
    critic_adapter = critic and config.ppo.critic == "separate"
    r, targets = _adapter_shape(config.model, config.lora.r, config.lora.target_modules)
    lora_params = shape.lora_params(r, targets)
    critic_layers = _reward_layers(config) if critic_adapter else 0
    critic_shape = _first_layers(shape, critic_layers)
    stacked = critic_adapter and critic_shape is shape  # the critic a second row block of the policy's pass
    trained = 1 + (critic_shape.layers / shape.layers if critic_adapter else 0)
    frozen = int(bool(config.reward_model)) + int(is_adapter_folder(config.model))
    prompt = min(prompt_tokens or rollout.max_prompt_length, rollout.max_prompt_length)
    width = prompt + rollout.max_new_tokens
    from posttrain.stages.rlhf_steps import pass_size

    micro = pass_size(ppo.minibatch_size, ppo.micro_batch_size, weight == 4)  # responses per forward/backward pass
    rows = micro * (2 if stacked else 1)
    attention = attention_for(device, width, "sdpa")
    per_layer = layer_bytes(shape, targets, r, act=act, lora_copies=False, mask=0, attention=attention, seq=width)
    graph = _activations(shape, rows * width, per_layer, act, checkpointing)
    if critic_adapter and not stacked:  # the critic's own pass; both graphs wait for one backward
        graph += _activations(critic_shape, micro * width, per_layer, act, checkpointing)
    # the policy's log-probs: bf16 logits, their fp32 copy over the temperature kept for the backward pass, and the
    # logsumexp temporaries; one more minibatch's, without a graph, while the first one's graph waits (scoring)
    logits = micro * rollout.max_new_tokens * shape.vocab * (weight + 4 + 4 + 4 + 2)
    # sampling: the KV cache of every response, and the policy folded into temporary copies of the base's linear
    # weights (and, on a CPU, the output layer prepacked for oneDNN: generation.packed_weight)
    kv_cache = shape.layers * 2 * shape.kv_dim * rollout.batch_size * width * act
    folded = shape.linear_params * weight + (shape.vocab * shape.hidden * weight if device == "cpu" else 0)
    quant = f", {config.quantization}" if config.quantization != "none" else ""
    training = graph + logits
    sampling = kv_cache + folded
    items = {
        f"base weights ({'bf16' if weight == 2 else 'fp32'}{quant})": base_bytes(shape, weight, config.quantization),
        "adapters (fp32)": 4 * lora_params * (1 + int(critic_adapter) + frozen),
        "adapter gradients + AdamW": 12 * lora_params * trained,
        # with a half-precision base the log-probs come from fp32 logits: the output layer's fp32 copy, made once
        **({"output layer in fp32 (the log-probs' logits)": shape.vocab * shape.hidden * 4} if base_dtype != torch.float32 else {}),
        f"activations ({rows} rows x {width} tokens"
        + (f", and {micro} over the critic's {critic_shape.layers} layers" if critic_adapter and not stacked else "")
        + f", checkpointing {'on' if checkpointing else 'off'})": graph,
        f"logits ({micro} x {rollout.max_new_tokens} response tokens x {shape.vocab})": logits,
        f"rollout: KV cache + folded policy ({max(sampling - training, 0) / GiB:.2f} GiB beyond training)":
            max(sampling - training, 0),
    }
    critic_role = ["critic"] if critic_adapter else ["value head"] if critic else []
    roles = (["policy"] + critic_role + (["reward"] if config.reward_model else [])
             + (["reference"] if is_adapter_folder(config.model) else []))
    notes = [f"{shape.params / 1e6:.1f} M base parameters; roles {', '.join(roles)}: {lora_params / 1e6:.2f} M LoRA "
             f"each (r={r}); prompts up to {prompt} tokens ({'the longest in --prompts' if prompt_tokens else 'rollout.max_prompt_length'})",
             f"sampling needs {sampling / GiB:.2f} GiB (KV cache {kv_cache / GiB:.2f}, folded policy {folded / GiB:.2f}) and "
             f"training {training / GiB:.2f} GiB, at different times: the larger counts"]
    return items, notes, {"batch": "ppo.micro_batch_size", "length": "rollout.max_new_tokens"}


def _advice(stage, config, device, checkpointing, knobs, engine, processes, runtime, capacity, prompt_tokens) -> list[str]:
    """What each change would bring the total to, biggest saving first."""
    import copy

    def total(checkpointing=checkpointing, **changes) -> float:
        changed = copy.deepcopy(config)
        for key, value in changes.items():
            target = changed
            *path, last = key.split(".")
            for part in path:
                target = getattr(target, part)
            setattr(target, last, value)
        return estimate(stage, changed, device, runtime=runtime, capacity=capacity, checkpointing=checkpointing,
                        engine=engine, processes=processes, prompt_tokens=prompt_tokens, advise=False).total

    options = []
    if not checkpointing:
        options.append(("--gradient_checkpointing true", total(checkpointing=True)))
    batch_key = knobs["batch"]
    section, name = batch_key.split(".")
    batch = getattr(getattr(config, section), name)
    if batch > 1 and stage != "rlhf":
        options.append((f"--{batch_key} {batch // 2} --train.grad_accum {config.train.grad_accum * 2} (the same "
                        "effective batch)", total(**{batch_key: batch // 2})))
    length = getattr(getattr(config, knobs["length"].split(".")[0]), knobs["length"].split(".")[1])
    options.append((f"--{knobs['length']} {length // 2}", total(**{knobs["length"]: max(1, length // 2)})))
    quant = config.quantization if stage == "rlhf" else config.train.quantization
    if device == "cuda" and quant == "none":
        options.append(("--quantization 4bit (QLoRA)", total(**{("quantization" if stage == "rlhf" else "train.quantization"): "4bit"})))
    out = [f"{text}: {value / GiB:.2f} GiB" for text, value in sorted(options, key=lambda o: o[1])]
    if device == "cuda":
        out.append("shard over several GPUs: accelerate launch --config_file configs/accelerate/fsdp.yaml (or zero3.yaml) "
                   "divides the weights, adapters and optimizer state by the number of GPUs; plan it with --processes N "
                   "--engine fsdp")
    return out


def checkpointing_wanted(stage: str, config: Any) -> bool:
    """A stage's gradient_checkpointing setting resolved on this machine: 'true'/'false' as given; 'auto' off on a CPU
    (it only costs time there) and, on a GPU, on when the run's plan without it is above 80% of the GPU's memory."""
    import torch

    setting = config.gradient_checkpointing if stage == "rlhf" else config.train.gradient_checkpointing
    if setting != "auto":
        return setting == "true"
    if not torch.cuda.is_available():
        return False
    engine, processes = _launched_engine()
    return not estimate(stage, config, "cuda", checkpointing=False, engine=engine, processes=processes, advise=False).fits


def _launched_engine() -> tuple[str, int]:
    """The engine and process count `accelerate launch` set up, read from the environment it gives each process."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp", processes
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "")
    return ({"2": "zero2", "3": "zero3"}.get(stage, "ddp") if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true" else "ddp"), processes


def longest_prompt(config: Any) -> int | None:
    """Tokens of the longest prompt in --prompts (chat template applied), or None without a prompts file."""
    if not config.prompts:
        return None
    from posttrain.data import load_prompts, render_prompt
    from posttrain.models import model_tokenizer

    tokenizer = model_tokenizer(config.model)
    rows = load_prompts(config.prompts).rows
    return max(len(tokenizer(render_prompt(tokenizer, r["prompt"]), add_special_tokens=isinstance(r["prompt"], str))["input_ids"])
               for r in rows)


def plan_stage(stage: str, argv: list[str], device: str = "auto", memory_gib: float | None = None, engine: str = "ddp",
               processes: int = 1) -> Plan:
    """The plan of ``posttrain <stage> <argv>`` on ``device`` ("auto": the GPU if there is one)."""
    from posttrain.commands import COMMANDS, parse_flags
    from posttrain.config import ConfigError, load_config

    if stage not in STAGES:
        raise ConfigError(f"posttrain plan: '{stage}' is not a training stage; plan one of {', '.join(STAGES)}.")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    config_file, overrides = parse_flags(argv, None)
    config = load_config(COMMANDS[stage].config(), config_file, overrides)
    capacity = int(memory_gib * GiB) if memory_gib else None
    prompts = longest_prompt(config) if stage == "rlhf" else None
    return estimate(stage, config, device, capacity=capacity, engine=engine, processes=processes, prompt_tokens=prompts)


def plan_main(argv: list[str]) -> None:
    """The ``posttrain plan`` command: STAGE, then --device/--memory/--engine/--processes, then the stage's flags."""
    from posttrain.config import ConfigError

    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[0] + "\n\nusage: posttrain plan STAGE [--device auto|cpu|cuda] [--memory GiB] "
              "[--engine ddp|fsdp|zero2|zero3] [--processes N] [the stage's own flags]")
        return
    stage, rest = argv[0], list(argv[1:])
    own = {"device": "auto", "memory": None, "engine": "ddp", "processes": "1"}
    for key in list(own):
        for form in (f"--{key}",):
            if form in rest:
                i = rest.index(form)
                if i + 1 >= len(rest):
                    raise ConfigError(f"posttrain plan: {form} needs a value.")
                own[key] = rest[i + 1]
                del rest[i:i + 2]
    if own["device"] not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"posttrain plan: --device {own['device']!r}: choose auto, cpu or cuda.")
    if own["engine"] not in ENGINES:
        raise ConfigError(f"posttrain plan: --engine {own['engine']!r}: choose one of {', '.join(ENGINES)}.")
    try:
        memory = float(own["memory"]) if own["memory"] else None
        processes = int(own["processes"])
    except ValueError:
        raise ConfigError("posttrain plan: --memory takes GiB (a number) and --processes a whole number.") from None
    if own["device"] == "cuda" and memory is None:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("posttrain plan: --device cuda on a machine without a GPU needs --memory GiB (the GPU's memory).")
    print(plan_stage(stage, rest, own["device"], memory, own["engine"], processes).render())
