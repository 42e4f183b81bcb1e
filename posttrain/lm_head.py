"""Per-token log-probabilities from the LM head, lean where TRL's fused head has no kernel (the CPU).

TRL 1.16's DPOTrainer replaces the model's forward with a fused LM head (``trl.trainer.utils.add_fused_lm_head``)
that never materialises the (batch, seq_len, vocab) logits. On CUDA it runs a Triton kernel over the completion's
positions only. Elsewhere it projects every position, prompt and padding included, and folds each vocabulary
tile with about ten full passes of torch ops (two scalings, a mean, a masked max for "is the label the top token",
the online logsumexp, the entropy sum). On a 2-core CPU that head was about 70% of a DPO step.

``use_lean_lm_head`` keeps TRL's forward everywhere it has its kernel, and elsewhere answers the same call
(``model(..., labels=labels, fused_lm_head=True)``) with the same output: it projects only the positions whose
label is not -100, in chunks of rows, takes the log-probability, entropy, mean logit and top-1 match from one
set of fp32 logits per chunk, and recomputes the chunk in the backward pass instead of keeping its logits.
The products run in the autocast dtype, as TRL's tiles do, so the log-probabilities agree with TRL's to that
dtype's rounding. The backward's product does too, where TRL accumulates it in fp32: under bf16 autocast the
hidden states' gradient differs from TRL's by one bf16 rounding (relative 1.7e-3 in ``bench/lm_head.py``), the
rounding every other product's gradient has under autocast. In fp32 the two heads agree to 1e-5 (tested).
"""

from __future__ import annotations

import functools
import types
import weakref

import torch
from torch import Tensor

from posttrain.footprint import LEAN_CHUNK_ELEMENTS, plain_head
from posttrain.generation import SharedPrompts, common_prefix, hidden_sharing_prompts, kv_cache_shareable, position_ids
from posttrain.prefix_tree import MOST_CELLS, MOST_NODES, PrefixTree, hidden_through_tree, prefix_tree, tree_pays, tree_shareable

# logits held at once: rows per chunk = this // vocabulary size (128 MiB in fp32); `posttrain plan` counts them too
CHUNK_ELEMENTS = LEAN_CHUNK_ELEMENTS
TRITON_DEVICES = ("cuda", "xpu")  # where TRL's fused head runs its own kernel, over the completion only


_CAST: dict = {}  # one frozen weight's cast: "weight" (a weak reference), "version", "value"


def _cast(weight: Tensor, dtype: torch.dtype) -> Tensor:
    """``weight`` in ``dtype``. A frozen weight's cast is kept, one at a time and only while the weight lives, for
    the next call: the forward and backward pass of every step cast the same output layer (7% of an SFT step of the
    default model on a CPU). It is cast again once the weight was changed in place."""
    if weight.dtype == dtype or weight.requires_grad:
        return weight.to(dtype)
    held = _CAST.get("weight")
    if held is None or held() is not weight or _CAST["version"] != weight._version or _CAST["value"].dtype != dtype:
        _CAST.clear()
        # the weight's end drops its cast too
        _CAST.update(weight=weakref.ref(weight, lambda _: _CAST.clear()), version=weight._version, value=weight.to(dtype))
    return _CAST["value"]


def _compute_dtype(hidden: Tensor) -> torch.dtype:
    kind = hidden.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else hidden.dtype


class CompactLogProbs(torch.autograd.Function):
    """log p(target) of ``hidden @ weight.T`` for each row, with the entropy, mean logit and top-1 match.

    Shapes: hidden (rows, hidden_size), weight (vocab, hidden_size), bias (vocab,) or None, targets (rows,).
    Returns four (rows,) tensors; only the log-probabilities carry a gradient (to ``hidden``, and to ``weight``
    and ``bias`` when they require one).
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor):
        dtype = _compute_dtype(hidden)
        step = max(1, CHUNK_ELEMENTS // weight.shape[0])
        log_z, target_logit, entropy, mean_logit, top1 = (torch.empty(len(hidden), device=hidden.device)
                                                          for _ in range(5))
        with torch.autocast(hidden.device.type, enabled=False):
            w = _cast(weight, dtype)
            b = None if bias is None else bias.to(dtype)
            for start in range(0, len(hidden), step):
                rows = slice(start, start + step)
                logits = _logits(hidden[rows], w, b, dtype)
                log_z[rows] = torch.logsumexp(logits, dim=-1)
                target_logit[rows] = logits.gather(-1, targets[rows, None]).squeeze(-1)
                probs = torch.exp(logits - log_z[rows, None])
                entropy[rows] = log_z[rows] - (probs * logits).sum(-1)
                mean_logit[rows] = logits.mean(-1)
                top1[rows] = (logits.argmax(-1) == targets[rows]).float()
        ctx.save_for_backward(hidden, weight, bias, targets, log_z)
        ctx.dtype, ctx.step = dtype, step
        is_top1 = top1.bool()
        ctx.mark_non_differentiable(entropy, mean_logit, is_top1)
        return target_logit - log_z, entropy, mean_logit, is_top1

    @staticmethod
    def backward(ctx, grad_logprobs: Tensor | None, *unused):
        hidden, weight, bias, targets, log_z = ctx.saved_tensors
        if grad_logprobs is None:
            return None, None, None, None
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, device=weight.device) if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros(weight.shape[0], device=weight.device) if ctx.needs_input_grad[2] else None
        with torch.autocast(hidden.device.type, enabled=False):
            w = _cast(weight, ctx.dtype)
            b = None if bias is None else bias.to(ctx.dtype)
            for start in range(0, len(hidden), ctx.step):
                rows = slice(start, start + ctx.step)
                g = grad_logprobs[rows].float()
                # d log p(y) / d logits = onehot(y) - softmax(logits)
                grad = torch.exp(_logits(hidden[rows], w, b, ctx.dtype) - log_z[rows, None]).mul_(-g[:, None])
                grad.scatter_add_(-1, targets[rows, None], g[:, None])
                if grad_hidden is not None:
                    grad_hidden[rows] = (grad.to(ctx.dtype) @ w).to(hidden.dtype)
                if grad_weight is not None:
                    grad_weight += grad.t() @ hidden[rows].float()
                if grad_bias is not None:
                    grad_bias += grad.sum(0)
        return (grad_hidden,
                None if grad_weight is None else grad_weight.to(weight.dtype),
                None if grad_bias is None else grad_bias.to(bias.dtype),
                None)


def _logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, dtype: torch.dtype) -> Tensor:
    """fp32 logits of a chunk of rows, from a product in ``dtype`` (as TRL's tiles)."""
    logits = hidden.to(dtype) @ weight.t()
    if bias is not None:
        logits = logits + bias
    return logits.float()


def _plain_rows(args: tuple, kwargs: dict) -> bool:
    """A plain call (ids and mask, positions from the mask): rows the pass may rearrange."""
    ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
    plain = ("input_ids", "attention_mask", "position_ids", "use_cache", "return_dict")
    if args or ids is None or mask is None or mask.dim() != 2 or any(v is not None for k, v in kwargs.items()
                                                                      if k not in plain):
        return False  # (peft passes inputs_embeds, output_attentions and output_hidden_states as None)
    # packed rows (positions that restart inside a row) are not rows of their own
    return kwargs.get("position_ids") is None or torch.equal(kwargs["position_ids"] * mask, position_ids(mask) * mask)


def _tree(model, kwargs: dict, shared: SharedPrompts | None) -> PrefixTree | None:
    """The batch as a prefix tree (posttrain.prefix_tree), when its one packed pass is cheaper than whole rows, or
    than the shared prefix's pass and the rows' rest (``shared``), and gives the same numbers: no active dropout,
    which would draw one mask for a shared token of every row where whole rows draw one each, and no gradient
    checkpointing, whose recomputation would pick the attention kernel afresh (posttrain.attention switches it
    by the width of other calls) for a mask built for this one. One pass however the rows are shared, so several
    processes (each its own tree) run it alike."""
    ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
    if ids.numel() > MOST_CELLS or not tree_shareable(model.config, ids.shape[1]):
        return None
    tree = prefix_tree(ids, mask)
    if (tree is None or tree.nodes > MOST_NODES
            or not tree_pays(tree, *ids.shape, model.config, shared.context if shared is not None else 0)):
        return None
    return None if _checkpointing(model) or (model.training and _dropout_active(model)) else tree


def _shared_prefix(model, kwargs: dict) -> SharedPrompts | None:
    """The columns every row of the batch begins with (common_prefix), when the pass can run them once: a model
    without gradient checkpointing, whose recomputed layers would write the prefix's KV cache a second time, and
    without active dropout, which would draw one mask for the prefix of every row where whole rows draw one each."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        return None  # each process would decide by its own batch, and FSDP's gathers must run alike on all of them
    shared = common_prefix(kwargs["input_ids"], kwargs["attention_mask"])  # first: the scans below cost a step
    if shared is None or _checkpointing(model) or (model.training and _dropout_active(model)):
        return None
    return shared


def _checkpointing(model) -> bool:
    if hasattr(type(model), "is_activation_checkpointing"):
        return model.is_activation_checkpointing
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())  # (before 5.x's rename)


def _dropout_active(model) -> bool:
    config = model.config.get_text_config()
    if getattr(config, "attention_dropout", 0.0) or 0.0:
        return True
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 and m.training for m in model.modules())


LEAN_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")


def use_lean_lm_head(model, outputs: tuple[str, ...] = LEAN_OUTPUTS) -> bool:
    """Answer TRL's ``fused_lm_head=True`` calls with `CompactLogProbs` where TRL has no kernel.

    ``model`` is the model TRL patched (a peft model is unwrapped to it); ``outputs`` the per-token fields the
    trainer reads (TRL's fused head also offers ``log_sum_sq_probs``, which this one does not: then nothing is
    installed). Calls TRL's fused forward unchanged on
    CUDA/XPU, for models whose logits are more than the head's product, for pre-shifted labels (context
    parallelism) and for sharded (DTensor) heads. Returns whether the lean head is installed; calling it again
    does nothing.
    """
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(target, "_posttrain_lean_head", False):
        return True
    if not set(outputs) <= set(LEAN_OUTPUTS) or not plain_head(target.config.get_text_config().to_dict()):
        return False
    trl_forward = target.forward
    from trl.trainer.utils import FusedCausalLMOutput

    share_prefix = kv_cache_shareable(target.config)

    @functools.wraps(type(target).forward)  # generate() checks its keyword arguments against this signature
    def forward(self, *args, fused_lm_head=False, labels=None, **kwargs):
        head = self.get_output_embeddings()
        lean = (fused_lm_head and labels is not None and head.weight.device.type not in TRITON_DEVICES
                and not any(kwargs.get(k) is not None for k in ("shift_labels", "num_items_in_batch"))
                and not kwargs.get("output_router_logits") and type(head.weight) is torch.nn.Parameter)
        if not lean:
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        kwargs["use_cache"] = False
        plain = share_prefix and _plain_rows(args, kwargs)
        shared = _shared_prefix(self, kwargs) if plain else None
        tree = _tree(self, kwargs, shared) if plain else None
        if tree is not None:
            hidden = hidden_through_tree(self.base_model, tree)[:, :-1]
        elif shared is not None:
            hidden = hidden_sharing_prompts(self.base_model, kwargs["input_ids"], kwargs["attention_mask"],
                                            shared)[:, :-1]
        else:
            hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        labels = labels[:, 1:].to(hidden.device)
        mask = labels != -100
        fields = CompactLogProbs.apply(hidden[mask], head.weight, head.bias, labels[mask])
        # masked_scatter keeps an all-prompt batch connected to the graph (a zero with a gradient), as TRL's does
        log_probs, entropy, mean_logits, is_top1 = (
            torch.zeros(mask.shape, device=hidden.device, dtype=x.dtype).masked_scatter(mask, x) for x in fields)
        return FusedCausalLMOutput(loss=-log_probs.sum() / mask.sum().clamp(min=1), log_probs=log_probs,
                                   entropy=entropy, mean_logits=mean_logits, is_top1=is_top1, label_mask=mask)

    target.forward = types.MethodType(forward, target)
    target._posttrain_lean_head = True
    return True
