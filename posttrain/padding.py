"""One padder for rows of token ids: torch's ``pad_sequence`` on either side, with the attention mask beside it."""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn.utils.rnn import pad_sequence


def pad(rows: list[list[int]], pad_id: int, side: Literal["right", "left"] = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)``, each ``(len(rows), longest row)`` of longs: the rows padded with ``pad_id`` on ``side``
    (left for generation, so every prompt ends where sampling starts), mask 1 on real tokens.

    >>> pad([[5, 6], [7]], 0, "left")
    (tensor([[5, 6], [0, 7]]), tensor([[1, 1], [0, 1]]))
    """
    tensors = [torch.tensor(row, dtype=torch.long) for row in rows]
    ids = pad_sequence(tensors, batch_first=True, padding_value=pad_id, padding_side=side)
    mask = pad_sequence([torch.ones_like(t) for t in tensors], batch_first=True, padding_value=0, padding_side=side)
    return ids, mask
