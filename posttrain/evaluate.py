"""Compare a checkpoint with a baseline: reward-model score, win-rate, length, side-by-side samples, and the
pairwise preference accuracy of a policy (implicit reward) or of a reward model.

Implicit reward of a policy on a preference pair (Rafailov et al. 2023, eq. 5)::

    r(x, y) = beta * (log pi(y | x) - log pi_ref(y | x))      summed over the response tokens of y

and the pair counts as right when r(x, chosen) > r(x, rejected). The reference is, in order:
  1. the adapter the checkpoint started from, when its posttrain.json names one that still exists
     (a DPO or PPO checkpoint trained on top of an SFT adapter: that SFT adapter was its reference);
  2. otherwise the checkpoint with its adapters disabled (the base model);
  3. for a model with no adapter (a merged or plain model) there is no reference: the margin is the plain
     sum log-prob margin ``log pi(chosen | x) - log pi(rejected | x)`` (beta 1).
beta is the DPO checkpoint's own beta, else 0.1; it scales the margins, never the accuracy.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable

import torch

from posttrain.config import ConfigError, EvalConfig, require, to_dict
from posttrain.data import encode_response, load_preferences, load_prompts, render_prompt
from posttrain.models import is_adapter_folder, read_metadata, write_metadata
from posttrain.padding import pad
from posttrain.rewards import load_reward_function

SHOWN_SAMPLES = 8  # side-by-side rows in the report page


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------


def win_rate(scores_a: list[float], scores_b: list[float]) -> float:
    """Share of prompts where A's reward beats B's; a tie counts half."""
    if not scores_a:
        return float("nan")
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores_a, scores_b, strict=True))
    return wins / len(scores_a)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def pair_accuracy(chosen: list[float], rejected: list[float]) -> dict[str, float]:
    """Accuracy (chosen strictly above rejected) and mean margin of paired scores."""
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {"accuracy": mean([float(m > 0) for m in margins]), "mean_margin": mean(margins), "pairs": len(margins)}


def _response_ids(tokenizer, prompt, response, max_length: int) -> tuple[list[int], int]:
    """Ids of prompt + response and where the response starts (after the assistant header)."""
    full = encode_response(tokenizer, prompt, response)
    plain = isinstance(prompt, str) and isinstance(response, str)
    head = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=plain)["input_ids"]
    start = 0
    while start < min(len(head), len(full)) and head[start] == full[start]:
        start += 1
    return full[:max_length], max(start, 1)  # the first token has nothing before it to be predicted from


@torch.no_grad()
def response_logprobs(model, tokenizer, prompts: list, responses: list, batch_size: int = 8, max_length: int = 512,
                      progress: str = "") -> list[float]:
    """Sum over the response tokens of log p(token | everything before it), one number per prompt + response.

    Rows longer than ``max_length`` tokens lose their end. Padding is on the right and masked out. ``progress``
    names a progress bar over the batches (none when empty).
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    rows = [_response_ids(tokenizer, p, r, max_length) for p, r in zip(prompts, responses, strict=True)]
    out: list[float] = []
    for first in tqdm(range(0, len(rows), batch_size), desc=progress, disable=not progress, unit="batch", leave=False):
        chunk = rows[first:first + batch_size]
        ids, attention = pad([tokens for tokens, _ in chunk], tokenizer.pad_token_id)
        scored = torch.zeros((len(chunk), ids.shape[1] - 1), dtype=torch.bool)  # (batch, width-1): targets ids[:, 1:]
        for row, (tokens, start) in enumerate(chunk):
            scored[row, start - 1:len(tokens) - 1] = True
        ids, attention, scored = ids.to(device), attention.to(device), scored.to(device)
        logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
        token_logprobs = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        out.extend((token_logprobs * scored).sum(-1).tolist())
    return out


@contextlib.contextmanager
def _active_adapter(model, name: str):
    previous = model.active_adapter
    model.set_adapter(name)
    try:
        yield
    finally:
        model.set_adapter(previous)


def reference_for(loaded) -> tuple[str, Callable[[], Any] | None, float]:
    """(description, context manager factory that switches to the reference or None, beta) for a loaded policy."""
    if loaded.adapter_path is None:
        return "none: the model has no adapter, so the margin is the plain sum log-prob margin", None, 1.0
    meta = read_metadata(loaded.adapter_path)
    recorded = meta.get("config") or {}
    beta = float(recorded.get("beta", 0.1)) if meta.get("stage") == "dpo" else 0.1
    start = recorded.get("model")
    if start and is_adapter_folder(start) and Path(start).resolve() != Path(loaded.adapter_path).resolve():
        loaded.model.load_adapter(str(start), adapter_name="reference")
        return f"the adapter it started from ({start})", lambda: _active_adapter(loaded.model, "reference"), beta
    return "the base model (adapters disabled)", loaded.model.disable_adapter, beta


def implicit_reward_accuracy(model_name: str, pairs: list[dict], batch_size: int = 8, max_length: int = 512) -> dict[str, Any]:
    """Pairwise accuracy of a policy judged by its implicit reward (see the module docstring)."""
    from posttrain.models import load_for_inference

    loaded = load_for_inference(model_name)
    prompts = [p["prompt"] for p in pairs]
    reference, use_reference, beta = reference_for(loaded)

    def logps(side: str) -> list[float]:
        return response_logprobs(loaded.model, loaded.tokenizer, prompts, [p[side] for p in pairs], batch_size, max_length,
                                 progress=f"log-probs of {side} responses")

    policy = {side: logps(side) for side in ("chosen", "rejected")}
    rewards = dict(policy)
    if use_reference is not None:
        with use_reference():
            ref = {side: logps(side) for side in ("chosen", "rejected")}
        rewards = {side: [beta * (p - r) for p, r in zip(policy[side], ref[side])] for side in policy}
    return {**pair_accuracy(rewards["chosen"], rewards["rejected"]), "reference": reference, "beta": beta}


def reward_model_accuracy(folder: str, pairs: list[dict], batch_size: int = 8) -> dict[str, Any]:
    from posttrain.stages.reward_model import load_reward_model

    rm = load_reward_model(folder)
    prompts = [p["prompt"] for p in pairs]
    chosen = rm.score(prompts, [p["chosen"] for p in pairs], batch_size, progress="scoring chosen")
    rejected = rm.score(prompts, [p["rejected"] for p in pairs], batch_size, progress="scoring rejected")
    return pair_accuracy(chosen, rejected)


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------


def generate_responses(model_name: str, prompts: list, max_new_tokens: int, temperature: float = 0.0,
                       seed: int = 0, **sampling: Any) -> tuple[list[str], list[int]]:
    """Responses of a model (or checkpoint) to prompts, and their lengths in tokens; ``sampling``: top_p, top_k,
    repetition_penalty, stop (see generation.generate_texts)."""
    from posttrain.generation import generate_texts
    from posttrain.models import load_for_inference

    loaded = load_for_inference(model_name)
    torch.manual_seed(seed)
    texts = generate_texts(loaded.model, loaded.tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                           progress=f"generating ({Path(model_name).name or model_name})", **sampling)
    lengths = [len(loaded.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return texts, lengths


def prompt_text(prompt) -> str:
    return prompt[-1]["content"] if isinstance(prompt, list) else prompt


def side_by_side(models: dict[str, str], prompts: list, max_new_tokens: int, reward_model: str = "",
                 temperature: float = 0.0, seed: int = 0, reward_functions: list | None = None,
                 prompt_rows: list[dict] | None = None, sampling: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per prompt: {"prompt", <label>: response, <label>_tokens, <label>_reward (with a reward model),
    <label>_<function> (with reward functions, called with the prompt rows' other columns)}."""
    rows = [{"prompt": prompt_text(p)} for p in prompts]
    for label, name in models.items():
        texts, lengths = generate_responses(name, prompts, max_new_tokens, temperature, seed, **(sampling or {}))
        for row, text, length in zip(rows, texts, lengths):
            row[label], row[f"{label}_tokens"] = text, length
    if reward_model:
        from posttrain.stages.reward_model import load_reward_model

        rm = load_reward_model(reward_model)
        for label in models:
            for row, score in zip(rows, rm.score(prompts, [row[label] for row in rows], progress=f"scoring ({label})")):
                row[f"{label}_reward"] = score
    prompt_rows = prompt_rows or [{"prompt": p} for p in prompts]
    columns = {k: [r.get(k) for r in prompt_rows] for k in prompt_rows[0] if k != "prompt"} if prompt_rows else {}
    for fn in reward_functions or []:
        for label in models:
            texts = [row[label] for row in rows]
            completions = [[{"role": "assistant", "content": t}] for t in texts] if prompts and isinstance(prompts[0], list) else texts
            for row, score in zip(rows, fn(prompts, completions, [[] for _ in texts], columns, 0, 0)):
                row[f"{label}_{fn.name}"] = score
    return rows


def sample_table(rows: list[dict[str, Any]], labels: list[str]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows for a report table: the prompt, then each model's response (with its reward if scored)."""
    table = []
    for row in rows:
        cells = [row["prompt"]]
        for label in labels:
            reward = f" [reward {row[f'{label}_reward']:.2f}]" if f"{label}_reward" in row else ""
            cells.append((row[label] or "(empty)") + reward)
        table.append(cells)
    return ["prompt", *labels], table


# ---------------------------------------------------------------------------------------------
# The `posttrain eval` command
# ---------------------------------------------------------------------------------------------


def default_output(model: str) -> Path:
    path = Path(model)
    if path.exists():
        return path.parent / f"{path.name}-eval"
    return Path("runs") / ("eval-" + model.replace("/", "_"))


def run_eval(config: EvalConfig) -> Path:
    """Evaluate ``config.model`` (against ``config.baseline``) as the module docstring says; returns the report folder."""
    # 1. check the settings, read the data and import the reward functions before any model loads
    model_is_rm, prompt_rows, functions, pairs = read_inputs(config)
    output = Path(config.output) if config.output else default_output(config.model)
    summary: dict[str, Any] = {"model": config.model, "baseline": config.baseline or None}
    labels = ["model"] + (["baseline"] if config.baseline else [])

    # 2. generate and judge: reward, win-rate, length
    rows = judged_responses(config, prompt_rows, functions, labels, summary) if prompt_rows else []

    # 3. pairwise preference accuracy: of the reward model, and of the policy by its implicit reward
    if pairs:
        judge = config.model if model_is_rm else config.reward_model
        if judge:
            summary.update({f"rm_{k}": v for k, v in reward_model_accuracy(judge, pairs).items()})
        if not model_is_rm:
            summary.update({f"policy_{k}": v for k, v in implicit_reward_accuracy(config.model, pairs).items()})

    # 4. capability: k-shot multiple choice (posttrain/capability.py) and lm-evaluation-harness tasks
    capability_blocks, capability = [], {}
    if config.benchmark or config.lm_eval:
        from posttrain.capability_report import run_evaluation_capability

        summary_part, capability_blocks, capability = run_evaluation_capability(config)
        summary.update(summary_part)

    # 5. write: metrics, samples, report page; posttrain.json last marks the report finished
    write_report(config, output, summary, rows, labels, capability, capability_blocks)
    for key, value in summary.items():
        print(f"{key:>24}: {value:.4f}" if isinstance(value, float) else f"{key:>24}: {value}")
    print(f"report: {output / 'report.md'}")
    return output


def read_inputs(config: EvalConfig) -> tuple[bool, list[dict], list, list[dict]]:
    """(whether --model is a reward model, prompt rows, reward functions, preference pairs), every bad setting and
    bad row refused before a model loads."""
    require(config, "model")
    measures_capability = bool(config.benchmark or config.lm_eval)
    if not config.prompts and not config.data and not measures_capability:
        raise ConfigError("give --prompts FILE (generate and compare responses), --data PREFS (pairwise accuracy), "
                          "--benchmark FILE (k-shot multiple choice) and/or --lm_eval TASKS.")
    model_is_rm = read_metadata(config.model).get("stage") in ("rm", "reward")
    if model_is_rm and (config.prompts or measures_capability):
        raise ConfigError(f"--model {config.model} is a reward model: it cannot answer --prompts or a benchmark. Pass it as --reward-model "
                          "with a policy as --model, or give only --data to measure its accuracy.")
    if config.baseline and not config.prompts and not measures_capability:
        raise ConfigError("--baseline is compared on generated responses or a benchmark: give --prompts or --benchmark too.")
    prompt_rows = load_prompts(config.prompts).rows[:config.max_prompts] if config.prompts else []
    functions = [load_reward_function(spec) for spec in config.reward_fn.split(",") if spec.strip()]
    for fn in functions:
        fn.check_columns(set().union(*(r.keys() for r in prompt_rows)) if prompt_rows else set(), config.prompts)
    pairs = load_preferences(config.data).rows[:config.max_prompts] if config.data else []
    if config.benchmark:
        from posttrain.capability import load_benchmark

        load_benchmark(config.benchmark, config.shots, config.benchmark_dev, config.max_questions)  # a bad row fails now
    return model_is_rm, prompt_rows, functions, pairs


def judged_responses(config: EvalConfig, prompt_rows: list[dict], functions: list, labels: list[str],
                     summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each model's responses to the prompts side by side, judged by the reward model and functions; the means
    and win-rates go into ``summary``."""
    prompts = [r["prompt"] for r in prompt_rows]
    models = {"model": config.model, **({"baseline": config.baseline} if config.baseline else {})}
    sampling = {"top_p": config.top_p, "top_k": config.top_k, "repetition_penalty": config.repetition_penalty,
                "stop": [s for s in config.stop.split(",") if s]}
    rows = side_by_side(models, prompts, config.max_new_tokens, config.reward_model, config.temperature, config.seed,
                        functions, prompt_rows, sampling)
    summary["prompts"] = len(prompts)
    for label in labels:
        summary[f"{label}_mean_length"] = mean([r[f"{label}_tokens"] for r in rows])
        if config.reward_model:
            summary[f"{label}_mean_reward"] = mean([r[f"{label}_reward"] for r in rows])
        for fn in functions:
            summary[f"{label}_mean_{fn.name}"] = mean([r[f"{label}_{fn.name}"] for r in rows])
    if config.reward_model and config.baseline:
        summary["win_rate"] = win_rate([r["model_reward"] for r in rows], [r["baseline_reward"] for r in rows])
    for fn in functions if config.baseline else []:
        summary[f"win_rate_{fn.name}"] = win_rate([r[f"model_{fn.name}"] for r in rows], [r[f"baseline_{fn.name}"] for r in rows])
    return rows


def write_report(config: EvalConfig, output: Path, summary: dict[str, Any], rows: list[dict[str, Any]], labels: list[str],
                 capability: dict, capability_blocks: list) -> None:
    """metrics.json, samples.jsonl and report.md; posttrain.json last marks the report finished."""
    from posttrain.report import write_metrics, write_report_page

    output.mkdir(parents=True, exist_ok=True)
    (output / "posttrain.json").unlink(missing_ok=True)
    write_metrics(output, summary, [], **({"capability": capability} if capability else {}))
    (output / "samples.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    blocks: list[tuple[str, Any]] = [
        ("p", f"posttrain eval --model {config.model}" + (f" --baseline {config.baseline}" if config.baseline else "")
         + (f" --reward-model {config.reward_model}" if config.reward_model else "")
         + (f" --benchmark {config.benchmark} --shots {config.shots}" if config.benchmark else "")
         + (f" --lm_eval {config.lm_eval}" if config.lm_eval else "")),
        ("table", (["metric", "value"], [[k, v] for k, v in summary.items() if v is not None])),
    ]
    blocks += capability_blocks
    if rows:
        blocks += [("h2", "Samples"), ("p", f"{'Greedy' if config.temperature == 0 else 'Sampled'} responses, at most "
                                            f"{config.max_new_tokens} new tokens; all rows are in samples.jsonl."),
                   ("table", sample_table(rows[:SHOWN_SAMPLES], labels))]
    write_report_page(output, "report", f"Evaluation of {config.model}", blocks)
    write_metadata(output, stage="eval", config=to_dict(config))
