"""The typed container of one step's rollouts, and minibatch views of it.

Shapes, once for the whole RL stage: B rows (prompts x group_size, each prompt's group in consecutive rows),
P prompt columns (left-padded), R response columns (right-padded). Per-token tensors are (B, R) and 0 past each
response's end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Rollout:
    """One step's responses on this process, and what the later steps of the loop compute from them.

    Filled by ``collect_rollouts``:
        query, query_mask   (B, P) long, left-padded prompt ids and their attention mask
        response            (B, R) long, pad after the stop token
        mask                (B, R) bool, the response tokens, up to and including the stop token
        lengths, has_stop   (B,) long / bool
        sampled_logprobs    (B, R) log-probs of the drawn tokens under the weights that drew them
        prompts             B prompt rows (dicts with "prompt" and the file's other columns), one per response
        group_size          responses per prompt
    Filled by ``score``:
        order               (B,) long, the row order of the first PPO epoch's minibatches
        old_logprobs, ref_logprobs  (B, R) policy and reference log-probs from the training forward's numerics
        values              (B, R) critic values, or None without a critic
        source_scores       {source name: (B,)} each reward source's score
        raw_scores          (B,) weighted sum of the sources; scores (B,) after the no-EOS penalty, normalisation
                            and clipping
    Filled by ``advantages``:
        kl                  (B, R) per-token KL estimate to the reference
        rewards             (B, R) per-token rewards; advantages, returns (B, R)
    """

    query: Tensor
    query_mask: Tensor
    response: Tensor
    mask: Tensor
    lengths: Tensor
    has_stop: Tensor
    sampled_logprobs: Tensor
    prompts: list[dict[str, Any]]
    group_size: int = 1
    order: Tensor | None = None
    old_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None
    values: Tensor | None = None
    source_scores: dict[str, Tensor] = field(default_factory=dict)
    raw_scores: Tensor | None = None
    scores: Tensor | None = None
    kl: Tensor | None = None
    rewards: Tensor | None = None
    advantages: Tensor | None = None
    returns: Tensor | None = None

    def __len__(self) -> int:
        return len(self.response)

    @property
    def context(self) -> int:
        return self.query.shape[1]

    def sequences(self) -> tuple[Tensor, Tensor]:
        """(input_ids, attention_mask), both (B, P + R): prompt then response."""
        return (torch.cat([self.query, self.response], dim=1),
                torch.cat([self.query_mask, self.mask.long()], dim=1))

    def shuffled(self) -> Tensor:
        """A random order of the rows that keeps each group's responses together and in order, so that a pass over
        a minibatch runs each prompt once (generation.SharedPrompts). With groups of 1, torch.randperm."""
        groups = torch.randperm(len(self) // self.group_size)
        return (groups[:, None] * self.group_size + torch.arange(self.group_size)).flatten()

    def rows(self, rows: Tensor) -> Minibatch:
        """The rows ``rows`` of the rollout without the columns that are padding in all of them.

        The batch's prompts are left-padded and its responses right-padded to the longest in the whole batch; a
        minibatch's own longest prompt and response are often shorter, and its forward passes need not pay for
        the rest. Per-token fields come cut to the minibatch's width.
        """
        ids, attn = self.sequences()
        first = int(self.query_mask[rows].any(0).long().argmax())
        filled = self.mask[rows].any(0).nonzero()
        width = int(filled[-1]) + 1 if len(filled) else 1
        cut = {name: None if getattr(self, name) is None else getattr(self, name)[rows, :width]
               for name in ("old_logprobs", "ref_logprobs", "values", "advantages", "returns")}
        return Minibatch(rows, ids[rows, first:self.context + width], attn[rows, first:self.context + width],
                         self.mask[rows, :width], self.context - first, width, **cut)


@dataclass
class Minibatch:
    """Rows of a rollout, trimmed (see :meth:`Rollout.rows`).

    ids, attn: (rows, context + width); mask and the per-token fields: (rows, width).
    """

    rows: Tensor
    ids: Tensor
    attn: Tensor
    mask: Tensor
    context: int
    width: int
    old_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None
    values: Tensor | None = None
    advantages: Tensor | None = None
    returns: Tensor | None = None

    def scatter(self, into: Tensor, values: Tensor) -> None:
        """Write per-token ``values`` (rows, width) into the rollout-shaped ``into`` (B, R)."""
        into[self.rows, :self.width] = values.to(into.dtype)


def minibatch_rows(order: Tensor, size: int) -> list[Tensor]:
    """``order`` cut into consecutive minibatches of ``size`` rows."""
    return list(order.split(size))
