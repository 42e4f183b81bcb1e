"""The memory of each part of a training run, worked out from the model's config.json before anything loads;
``posttrain plan`` (plan.py) adds them up for a stage.

An estimate is a sum of parts, each a count of tensors times their bytes:
    runtime        Python with torch, transformers, TRL and peft imported: this process's own resident memory after
                   importing them (on a CPU); the CUDA context on a GPU
    base weights   every parameter of the base at its storage dtype; 4-bit NF4 is 0.5 byte a weight plus about 1/32
                   byte of double-quantized constants; embeddings, norms and the output layer are never quantized
    adapters       LoRA A and B in fp32, and for the trained ones their gradients and AdamW's two moments (16 bytes a
                   parameter in all)
    activations    the tensors autograd keeps for the backward pass, counted per token and layer from the Llama
                   decoder's forward (see :func:`layer_bytes`); with gradient checkpointing, each layer's input alone
                   plus one layer recomputed at a time
    logits         the full-vocabulary logits of the tokens of one pass and the softmax temporaries around them;
                   on a CPU, once more: glibc keeps the freed heap of one step's peak resident, and the next step's
                   peak lands beside it (measured: the second step peaks one such transient above the first, then
                   flat; bench/plan_check.py)
    (RL stage)     the rollout's KV cache and the policy folded into temporary copies of the base weights while
                   sampling; the stacked policy+critic graph of one minibatch (the first minibatch's graph is kept
                   through scoring, while the other minibatches are scored without one)
Shapes are upper bounds: every row as long as train.max_length (or prompt + response at their limits).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GiB = 2**30
FIT_SHARE = 0.8  # plan to use at most this share of the device's memory (the rest: allocator slack, fragmentation)
CUDA_CONTEXT = 600 * 2**20  # CUDA context and kernels on the GPU: about 0.5-0.7 GiB with torch's CUDA 12 builds
# TRL's fused LM head (trl/kernels/chunked_logprob.py) projects tiles of TOKENS x VOCAB logits at a time
TRL_TILE_TOKENS, TRL_TILE_VOCAB = 4096, 32768
# fp32 tiles alive at once: on a CPU its torch fold keeps the product, its scaled copy, z, log p, p, the gradient and
# three temporaries of `grad_logprobs * (is_target - p)` in the backward pass; on a GPU its Triton kernel folds in place
TRL_TILES = {"cpu": 9, "cuda": 2}
# posttrain.lm_head, which answers TRL's head on a CPU, projects chunks of ROWS x VOCAB with ROWS x VOCAB at most this
# many elements (lm_head.CHUNK_ELEMENTS), and at most 3 fp32 chunks are alive at once (logits, their softmax and
# its product with them in the forward pass; the recomputed logits, their gradient and its bf16 copy in the backward)
LEAN_CHUNK_ELEMENTS, LEAN_CHUNKS = 2**25, 3
# config fields that make a model's logits more than its head's product; posttrain.lm_head leaves such models to TRL
HEAD_SCALINGS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def plain_head(text_config: dict) -> bool:
    """Whether a model's logits are its head's product alone (no soft-capping, scaling or router loss), from its
    text config as a dict."""
    return (not any(text_config.get(name) not in (None, 1, 1.0) for name in HEAD_SCALINGS)
            and not text_config.get("output_router_logits", False))


@dataclass(frozen=True)
class Shape:
    """A decoder-only transformer's sizes, as its config.json gives them."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    plain_head: bool = True  # see plain_head: the lean LM head can answer TRL's on a CPU

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> list[tuple[str, int, int]]:
        """(name, in_features, out_features) of each linear layer in one decoder layer."""
        h, i, q, kv = self.hidden, self.intermediate, self.q_dim, self.kv_dim
        return [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h),
                ("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]

    @property
    def linear_params(self) -> int:
        return self.layers * sum(a * b for _, a, b in self.linears())

    @property
    def other_params(self) -> int:
        """Embeddings, norms and (untied) output layer: the parameters bitsandbytes leaves unquantized."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + (2 * self.layers + 1) * self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params

    def lora_params(self, r: int, targets: str) -> int:
        return self.layers * sum(r * (a + b) for name, a, b in self.linears() if targeted(name, targets))


def targeted(name: str, targets: str) -> bool:
    return targets == "all-linear" or name in {t.strip() for t in targets.split(",")}


def read_shape(model: str) -> Shape:
    """The base model's shape from its config.json, without loading any weights: a posttrain checkpoint's base,
    a local folder, the embedded default's converted folder, or a hub id (its config only)."""
    from posttrain.models import DEFAULT_MODEL, EMBEDDED_MODELS, ModelError, adapter_base, is_adapter_folder, posttrain_home

    name = model or DEFAULT_MODEL
    if is_adapter_folder(name):
        name = adapter_base(name)
    if name in EMBEDDED_MODELS:
        file = posttrain_home() / "models" / name / "config.json"
        if not file.is_file():
            raise ModelError(f"the default model '{name}' is not converted yet; any command that loads it (for example "
                             f"`posttrain chat {name} --prompt hi`) converts it once, then plan again.")
        config = json.loads(file.read_text())
    elif Path(name, "config.json").is_file():
        config = json.loads(Path(name, "config.json").read_text())
    else:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(name).to_dict()
        except OSError as err:
            raise ModelError(f"could not read the config of '{name}': {str(err).splitlines()[0]}") from None
    config = config.get("text_config", config)
    heads = config["num_attention_heads"]
    return Shape(layers=config["num_hidden_layers"], hidden=config["hidden_size"], intermediate=config["intermediate_size"],
                 heads=heads, kv_heads=config.get("num_key_value_heads") or heads,
                 head_dim=config.get("head_dim") or config["hidden_size"] // heads, vocab=config["vocab_size"],
                 tied=bool(config.get("tie_word_embeddings", False)), plain_head=plain_head(config))


def base_bytes(shape: Shape, dtype_bytes: int, quantization: str) -> int:
    """The base's weights: 4-bit NF4 with double quantization stores 4 bits a weight plus 8-bit constants per block of
    64 and fp32 constants per 256 blocks (Dettmers et al. 2023, section 3): 4.127 bits; int8 is 1 byte a weight."""
    if quantization == "4bit":
        return int(shape.linear_params * 4.127 / 8) + shape.other_params * dtype_bytes
    if quantization == "8bit":
        return shape.linear_params + shape.other_params * dtype_bytes
    return shape.params * dtype_bytes


def layer_bytes(shape: Shape, targets: str, r: int, *, act: int, lora_copies: bool, mask: int,
                attention: str, seq: int) -> float:
    """Bytes autograd keeps per token in one decoder layer (Llama: RMSNorm, attention with RoPE, SwiGLU MLP) with LoRA
    adapters and frozen base weights. A frozen linear keeps no activation (its weight gradient is never needed); what
    stays is (checked against the tensors torch.autograd.graph.saved_tensors_hooks sees, tests/test_plan.py):
        norms        both RMSNorms' inputs in fp32 (the norm upcasts): 2 h x 4 bytes
        LoRA inputs  each adapted linear's input: one tensor shared by the adapters that read it (the MLP's product
                     for down_proj; for o_proj the fused attention's output itself), or, with
                     ``lora_copies``, a copy of its own per adapter (dropout's output, or peft's cast to fp32 under
                     autocast) and dropout's mask of ``mask`` bytes an element (a float tensor on a CPU, where
                     torch's dropout is not fused; 1 byte on a GPU); ``act`` bytes each
        attention    "sdpa" (fused kernel, grouped heads): q, k and v (k and v at their own kv_dim) and the output,
                     and a logsumexp per head; "eager": q, and k and v repeated to every head, and the softmax of the
                     scores, heads x seq, in fp32 and again in ``act`` bytes (the output's copy is the o_proj
                     input, counted above)
        MLP          gate, up and SiLU(gate): 3 intermediate
        LoRA A out   r per adapter
    ``act``: bytes of the activations' dtype (4 for fp32, 2 under bf16 autocast).
    """
    groups = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "o_proj": "o_in", "gate_proj": "mlp_in",
              "up_proj": "mlp_in", "down_proj": "down_in"}
    adapted = [(name, a) for name, a, _ in shape.linears() if targeted(name, targets)]
    if lora_copies:
        lora_in = sum(a * (act + mask) for _, a in adapted)
    else:
        shared = {groups[name]: a * act for name, a in adapted}
        if attention != "eager":
            shared.pop("o_in", None)  # the fused kernel's output is already laid out as o_proj reads it: one tensor
        lora_in = sum(shared.values())
    if attention == "eager":
        attn = 3 * shape.q_dim * act + shape.heads * seq * (4 + act)
    else:
        attn = (2 * shape.q_dim + 2 * shape.kv_dim) * act + shape.heads * 4
    return 2 * shape.hidden * 4 + lora_in + attn + 3 * shape.intermediate * act + len(adapted) * r * act


@dataclass
class Plan:
    """A stage's memory, part by part (bytes), against what the device has."""

    stage: str
    device: str
    items: dict[str, float]
    capacity: int
    notes: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.items.values())

    @property
    def fits(self) -> bool:
        return self.total <= FIT_SHARE * self.capacity

    def render(self) -> str:
        width = max(len(k) for k in self.items)
        lines = [f"posttrain plan {self.stage} on {self.device}:"]
        lines += [f"  {name:<{width}}  {value / GiB:7.2f} GiB" for name, value in self.items.items()]
        lines.append(f"  {'total':<{width}}  {self.total / GiB:7.2f} GiB   of {self.capacity / GiB:.1f} GiB "
                     f"({100 * self.total / self.capacity:.0f}%)")
        lines += [f"  note: {n}" for n in self.notes]
        if self.fits:
            lines.append(f"fits (under {FIT_SHARE:.0%} of the device's memory).")
        else:
            lines.append(f"will not fit in {FIT_SHARE:.0%} of the device's memory; to bring it down:")
            lines += [f"  - {a}" for a in self.advice]
        return "\n".join(lines)


def device_capacity(device: str) -> int:
    """Bytes of memory the run has: the GPU's (torch.cuda.get_device_properties), else the machine's RAM."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_properties(0).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def runtime_bytes(device: str) -> int:
    """What the process holds before any model: on a CPU, this process's own resident memory once the libraries a
    stage imports are imported (measured, so it follows the machine and the library versions); on a GPU, the CUDA
    context (the host memory is not the GPU's)."""
    if device == "cuda":
        return CUDA_CONTEXT
    import importlib

    for module in ("posttrain.stages.sft", "posttrain.stages.dpo", "posttrain.stages.reward", "posttrain.stages.rlhf"):
        importlib.import_module(module)  # for their resident memory, as a stage imports them

    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
