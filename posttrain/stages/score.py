"""``posttrain score``: rewards for the rows of a file (responses or preference pairs) from a reward model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from posttrain.config import ScoreConfig, require
from posttrain.data import PREFERENCE_FORMATS, SFT_FORMATS, DataError, Row, load_preferences, read_rows, sft_example
from posttrain.stages.common import log
from posttrain.stages.reward import PairStats, response_tokens
from posttrain.stages.reward_model import load_reward_model, score_ids


def _scored_row(row: Row, source: str) -> tuple[Any, Any]:
    """(prompt, response) of one row to score: prompt/completion (or response), messages, alpaca or sharegpt."""
    data = dict(row.data)
    if "response" in data and "completion" not in data and "prompt" in data:
        data["completion"] = data["response"]
    example = sft_example(Row(data, row.where), source)
    if "messages" not in example:
        return example["prompt"], example["completion"]
    messages = example["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    if last == 0:
        raise DataError(source, row.where, "the conversation starts with the assistant turn; there is no prompt to score it against.", SFT_FORMATS)
    return messages[:last], messages[last]["content"]


def _default_output(data: str) -> Path:
    path = Path(data)
    return path.with_name(path.name.removesuffix(path.suffix) + ".scored.jsonl")


def run_score(config: ScoreConfig) -> dict[str, Any]:
    """Score rows with a reward model and write them back with a ``reward`` field; on preference pairs,
    also report pairwise accuracy. Returns the summary it prints."""
    require(config, "model", "data")
    rows = read_rows(config.data, PREFERENCE_FORMATS + "\n" + SFT_FORMATS)
    pairs = "chosen" in rows[0].data and "rejected" in rows[0].data
    if pairs:
        table = load_preferences(config.data)
    else:
        scored = [_scored_row(row, config.data) for row in rows]
    rm = load_reward_model(config.model)
    output = Path(config.output) if config.output else _default_output(config.data)

    if pairs:
        prompts = [e["prompt"] for e in table.rows]
        chosen_ids, chosen_starts, cut_c = rm.encode(prompts, [e["chosen"] for e in table.rows], config.max_length)
        rejected_ids, rejected_starts, cut_r = rm.encode(prompts, [e["rejected"] for e in table.rows], config.max_length)
        pad = rm.tokenizer.pad_token_id
        stats = PairStats(score_ids(rm.model, chosen_ids, chosen_starts, pad, config.batch_size, "scoring chosen",
                                    pooling=rm.pooling),
                          score_ids(rm.model, rejected_ids, rejected_starts, pad, config.batch_size, "scoring rejected",
                                    pooling=rm.pooling),
                          [response_tokens(rm.tokenizer, e["chosen"]) for e in table.rows],
                          [response_tokens(rm.tokenizer, e["rejected"]) for e in table.rows])
        summary = {**stats.summary(), "rows_cut": cut_c + cut_r}
        out_rows = [{**row.data, "reward_chosen": c, "reward_rejected": r} for row, c, r in zip(rows, stats.chosen, stats.rejected)]
        log(f"pairwise accuracy {summary['accuracy']:.3f} over {summary['pairs']} pairs, mean margin {summary['mean_margin']:.3f}, "
            f"corr(reward, length) {summary['length_correlation']:.3f}")
    else:
        ids, starts, cut = rm.encode([p for p, _ in scored], [r for _, r in scored], config.max_length)
        rewards = score_ids(rm.model, ids, starts, rm.tokenizer.pad_token_id, config.batch_size, "scoring", pooling=rm.pooling)
        mean = sum(rewards) / len(rewards)
        std = math.sqrt(sum((x - mean) ** 2 for x in rewards) / max(1, len(rewards) - 1))
        summary = {"rows": len(rewards), "reward_mean": mean, "reward_std": std, "rows_cut": cut}
        out_rows = [{**row.data, "reward": reward} for row, reward in zip(rows, rewards)]
        log(f"scored {len(rewards)} rows: mean reward {mean:.3f}, std {std:.3f}")
    if summary["rows_cut"]:
        log(f"{summary['rows_cut']} sequences were longer than --max-length {config.max_length} and were cut from the left")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in out_rows), encoding="utf-8")
    log(f"wrote {len(out_rows)} scored rows to {output}")
    return summary
