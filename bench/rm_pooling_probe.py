"""Which hidden state should a reward head read? A linear probe on the frozen default model.

For each preference task that ``bench/quality.py`` built (its cache's tasks/<task>/prefs_{train,heldout}.jsonl),
every response is rendered as the reward model reads it (``reward_model_input``) and passed once through the
frozen base; the features are the final hidden state of the last token ("last"), the mean over every token
("mean") and the mean over the response's tokens ("response_mean"), the ``posttrain rm --pooling`` choices. A
Bradley-Terry probe (logistic regression without intercept on feature(chosen) - feature(rejected), both orders) is
fitted on the training pairs at several regularisation strengths and scored on the held-out pairs. No LoRA and no training of the body: this says which
pooling carries the judge's signal before fine-tuning, in a few minutes on a CPU.

    python bench/rm_pooling_probe.py --cache runs/quality        # after bench/quality.py has built its tasks

Writes bench/results/rm_pooling_probe.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def features(model, tokenizer, rows: list[dict]) -> dict[str, torch.Tensor]:
    """{pooling: (pairs, 2, hidden)} final-layer features of each pair's chosen and rejected response."""
    from posttrain.stages.reward_model import pool, reward_model_rows

    out: dict[str, list] = {"last": [], "mean": [], "response_mean": []}
    for row in rows:
        pair = {k: [] for k in out}
        for side in ("chosen", "rejected"):
            (row_ids,), (start,) = reward_model_rows(tokenizer, [row["prompt"]], [row[side]])
            ids = torch.tensor([row_ids])
            with torch.no_grad():
                hidden = model.base_model(input_ids=ids).last_hidden_state.float()
            mask = torch.ones_like(ids)
            for name in ("last", "mean"):
                pair[name].append(pool(hidden, mask, name)[0])
            pair["response_mean"].append(hidden[0, start:].mean(0))  # the response's tokens alone
        for name in out:
            out[name].append(torch.stack(pair[name]))
    return {k: torch.stack(v) for k, v in out.items()}


def probe(train: torch.Tensor, held: torch.Tensor, strength: float) -> tuple[float, float]:
    """(train, held-out) pairwise accuracy of an L2-regularised Bradley-Terry probe: w minimising
    sum over both orders of each pair of -log sigmoid(w . (chosen - rejected)) + |w|^2 / (2 strength), which is
    scikit-learn's LogisticRegression(C=strength, fit_intercept=False) on the mirrored differences."""
    diff = (train[:, 0] - train[:, 1]).double()
    w = torch.zeros(diff.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        loss = 2 * torch.nn.functional.softplus(-(diff @ w)).sum() + w.pow(2).sum() / (2 * strength)
        loss.backward()
        return loss

    optimizer.step(objective)
    with torch.no_grad():
        held_diff = (held[:, 0] - held[:, 1]).double()
        return float((diff @ w > 0).double().mean()), float((held_diff @ w > 0).double().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default="runs/quality", help="bench/quality.py's --cache (its full/tasks are read)")
    parser.add_argument("--tasks", nargs="+", default=["readability", "sentiment"])
    parser.add_argument("--strengths", nargs="+", type=float, default=[0.01, 0.1, 1.0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    from posttrain.models import load_model

    tasks_dir = Path(args.cache) / "full" / "tasks"
    if not (tasks_dir / args.tasks[0] / "prefs_train.jsonl").is_file():
        raise SystemExit(f"{tasks_dir} has no prefs_train.jsonl for {args.tasks[0]}: run bench/quality.py --cache "
                         f"{args.cache} first (it builds the tasks).")
    loaded = load_model(args.model, attach=False, dtype=torch.float32, device=torch.device("cpu"))
    model = loaded.model.eval()
    results = {"model": args.model, "date": time.strftime("%Y-%m-%d"), "tasks": {}}
    for task in args.tasks:
        read = lambda split: [json.loads(line) for line in (tasks_dir / task / f"prefs_{split}.jsonl").open()]
        train, held = features(model, loaded.tokenizer, read("train")), features(model, loaded.tokenizer, read("heldout"))
        rows = []
        for pooling in ("last", "mean", "response_mean"):
            for strength in args.strengths:
                train_acc, held_acc = probe(train[pooling], held[pooling], strength)
                rows.append({"pooling": pooling, "C": strength, "train_accuracy": train_acc, "heldout_accuracy": held_acc})
                print(f"{task:12s} {pooling:5s} C={strength:<5} train {train_acc:.3f}  held-out {held_acc:.3f}", flush=True)
        results["tasks"][task] = {"train_pairs": len(train["last"]), "heldout_pairs": len(held["last"]), "probes": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rm_pooling_probe.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
