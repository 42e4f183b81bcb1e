"""A batch as a prefix tree: each token that rows share, in the same place after the same tokens, runs once.

Rows of a training batch repeat one another's beginnings: a chat template writes its system prompt before every
conversation (SmolLM2's default, 24 tokens), and DPO's chosen and rejected rows share their whole prompt. The batch
is packed into one row of its distinct prefix-tree nodes (each row's token is the node reached from its
predecessor's node by that token), at positions equal to their depth, and attends through a mask that lets each
node see its ancestors only. Each row's hidden states are then gathered back from its nodes. That is the pass over
whole rows up to the order of sums (no padding, and every repeated beginning run once), in one call of the body,
with its gradients; several processes (each its own tree) run it alike. It never runs under gradient
checkpointing (see hidden_through_tree).

The packed row attends densely (nodes x nodes), so it pays only while the batch is short: `tree_pays` weighs the
saved tokens' products against the extra attention, and against running only the prefix every row shares once
(generation.common_prefix, from a KV cache), which attends sparsely. On DPO's quality task (8 rows of 89 columns,
469 nodes, where the 24-token system prompt is most of what rows share) the tree pass was slower than that; on
SFT's (4 rows of 59 columns, 141 nodes) a step took 0.72 of whole rows' time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from posttrain.attention import attention_for

LEAST_SAVED_SHARE = 0.1  # the tree runs only when its estimated cost is at most 90% of the pass it replaces
MOST_CELLS = 8192  # batches of more (rows x columns) cells are not examined
MOST_NODES = 512  # larger trees are not run: their dense (heads, nodes, nodes) scores grow past a few MiB a layer
ATTENTION_WEIGHT = 3  # see pass_cost


@dataclass
class PrefixTree:
    """ids, positions: (1, nodes) long; allowed: (nodes, nodes) bool, node i sees node j (an ancestor or itself);
    node_of: (rows, columns) long, the node of each row's token (0 at padding)."""

    ids: Tensor
    positions: Tensor
    allowed: Tensor
    node_of: Tensor

    @property
    def nodes(self) -> int:
        return self.ids.shape[1]


def prefix_tree(input_ids: Tensor, attention_mask: Tensor) -> PrefixTree | None:
    """The batch's prefix tree, or None unless every row's tokens are one run from its first column (right
    padding, as TRL's collators pad)."""
    rows, columns = input_ids.shape
    lengths = attention_mask.sum(1)
    span = torch.arange(columns, device=attention_mask.device)[None, :]
    if not torch.equal(attention_mask.bool(), span < lengths[:, None]) or not int(lengths.max()):
        return None  # left padding (positions would not be the columns'), a hole, or nothing at all
    ids, count = input_ids.tolist(), lengths.tolist()
    children: dict[tuple[int, int], int] = {}
    tokens, parents, depths = [], [], []
    node_of = [[0] * columns for _ in range(rows)]
    for r in range(rows):
        parent = -1
        for depth in range(count[r]):  # right padding: a token's column is its depth
            key = (parent, ids[r][depth])
            node = children.get(key)
            if node is None:
                node = children[key] = len(tokens)
                tokens.append(key[1])
                parents.append(parent)
                depths.append(depth)
            node_of[r][depth] = node
            parent = node
    device = input_ids.device
    nodes = len(tokens)  # at least 1: some row has a token
    parent_of = torch.tensor(parents, device=device)
    depth_of = torch.tensor(depths, device=device)
    allowed = torch.zeros(nodes, nodes, dtype=torch.bool, device=device)
    for depth in range(int(depth_of.max()) + 1):  # each level copies its parents' rows
        level = (depth_of == depth).nonzero().squeeze(1)
        if depth:
            allowed[level] = allowed[parent_of[level]]
        allowed[level, level] = True
    return PrefixTree(torch.tensor([tokens], device=device), depth_of[None, :], allowed,
                      torch.tensor(node_of, device=device))


def pass_cost(config, queries: int, keys: int) -> float:
    """A pass's rough cost: ``queries`` tokens, each through every layer's products (about 2 x 12 x hidden^2) and
    attending to ``keys`` tokens (2 x 2 x hidden a key, counted ATTENTION_WEIGHT times: on a CPU in bf16 the
    attention's batched products and softmax ran at about a third of the layers' rate, 2026-12-07)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = text.hidden_size
    return queries * (24 * hidden * hidden + ATTENTION_WEIGHT * 4 * hidden * keys)


def tree_pays(tree: PrefixTree, rows: int, columns: int, config, shared_columns: int = 0) -> bool:
    """Whether the packed pass costs at most (1 - LEAST_SAVED_SHARE) of the pass it replaces: whole rows, or,
    with ``shared_columns`` (the columns every row shares, run once from a KV cache), that prefix's pass and
    every row's rest. The packed row's keys are all its nodes: its dense mask computes every score."""
    other = pass_cost(config, rows * (columns - shared_columns), columns)
    if shared_columns:
        other += pass_cost(config, shared_columns, shared_columns)
    return pass_cost(config, tree.nodes, tree.nodes) <= (1 - LEAST_SAVED_SHARE) * other


def tree_attention_mask(tree: PrefixTree, attention: str) -> Tensor:
    """The packed row's 4D mask (1, 1, nodes, nodes) for the attention kernel (transformers passes a 4D mask to
    it as it is): boolean for sdpa, additive (fp32) for eager."""
    if attention == "sdpa":
        return tree.allowed[None, None]
    blocked = torch.zeros(tree.allowed.shape, device=tree.allowed.device)
    return blocked.masked_fill_(~tree.allowed, torch.finfo(torch.float32).min)[None, None]


def tree_shareable(config, longest: int) -> bool:
    """Whether the model reads a token's place from its position alone, attends causally, and takes the mask
    transformers hands to the kernel unchanged: sdpa or eager attention, no ALiBi (whose bias follows the key's
    column: Bloom, MPT, Falcon with alibi), no bidirectional or chunked attention, and no sliding window shorter
    than the longest row (one mask serves every layer)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    attn_config = getattr(text, "attn_config", None)
    if (text.model_type in ("bloom", "mpt") or getattr(text, "alibi", False) or getattr(attn_config, "alibi", False)
            or getattr(text, "use_bidirectional_attention", None) or getattr(text, "is_causal", True) is False):
        return False
    chunk = getattr(text, "attention_chunk_size", None)
    window = getattr(text, "sliding_window", None)
    return not (chunk and longest > chunk) and not (window and longest > window)


def hidden_through_tree(body, tree: PrefixTree) -> Tensor:
    """The body's last hidden states of the batch's rows, (rows, columns, hidden), from one pass over the tree.
    The pass never runs under gradient checkpointing (posttrain.lm_head): its recomputation would read the
    attention kernel afresh, and the mask built here is for the kernel of this call."""
    current = body.config._attn_implementation
    # the kernel posttrain.attention picks for rows this long (eager for short ones on a CPU), for this call only:
    # its switch reads 2-D masks, and a later call's kernel must be the one it left
    kernel = attention_for(tree.ids.device.type, tree.nodes, current)
    mask = tree_attention_mask(tree, kernel)
    if kernel != current:
        body.set_attn_implementation(kernel)
    try:
        with _plain_products(tree):
            out = body(input_ids=tree.ids, attention_mask=mask, position_ids=tree.positions, use_cache=False)
    finally:
        if kernel != current:
            body.set_attn_implementation(current)
    return out.last_hidden_state[0][tree.node_of]


def _plain_products(tree: PrefixTree):
    """On a CPU, sdpa as plain products (softmax(QK^T + mask) V): for a masked row of a few hundred tokens its
    flash kernel's backward took 5.4 ms a layer where the products take 1.4 (bf16, one thread; the whole step
    1.04 s against 1.28 for whole rows with the flash kernel, 2026-12-07). Trees are at most MOST_NODES long."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH]) if tree.ids.device.type == "cpu" else contextlib.nullcontext()
