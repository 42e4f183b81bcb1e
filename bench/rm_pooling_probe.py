"""Which hidden state should a reward head read? A linear probe on the frozen default model.

For each preference task that ``bench/quality.py`` built (its cache's tasks/<task>/prefs_{train,heldout}.jsonl),
every response is rendered as the reward model reads it (``reward_model_input``) and passed once through the
frozen base; the features are the final hidden state of the last token ("last"), the mean over every token
("mean") and the mean over the response's tokens ("response_mean"), the ``posttrain rm --pooling`` choices. A
Bradley-Terry probe (logistic regression without intercept on feature(chosen) - feature(rejected), both orders) is
fitted on the training pairs at several regularisation strengths and scored on the held-out pairs. No LoRA and no training of the body: this says which
pooling carries the judge's signal before fine-tuning, in a few minutes on a CPU.

    python bench/rm_pooling_probe.py --cache runs/quality        # after bench/quality.py has built its tasks
    python bench/rm_pooling_probe.py --by-layer --cache runs/quality --draw 1   # the response mean of every layer

Writes bench/results/rm_pooling_probe.json (with --by-layer, rm_layer_probe[-drawN].json): does a reward head that
read another layer's states (the embeddings' mean, a middle layer) separate the held-out pairs better?
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


def layer_features(model, tokenizer, rows: list[dict]) -> torch.Tensor:
    """(pairs, 2, layers + 1, hidden) mean over each response's tokens of every layer's hidden states (index 0 the
    embeddings, the last one after the final norm, as the reward head reads it), for chosen and rejected."""
    from posttrain.stages.reward_model import reward_model_rows

    out = []
    for row in rows:
        pair = []
        for side in ("chosen", "rejected"):
            (row_ids,), (start,) = reward_model_rows(tokenizer, [row["prompt"]], [row[side]])
            with torch.no_grad():
                states = model.base_model(input_ids=torch.tensor([row_ids]), output_hidden_states=True).hidden_states
            pair.append(torch.stack([state[0, start:].float().mean(0) for state in states]))
        out.append(torch.stack(pair))
    return torch.stack(out)


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


def by_layer(model, tokenizer, train_rows: list[dict], held_rows: list[dict], strengths: list[float],
             task: str) -> dict:
    """The probe on every layer's response mean; each feature is divided by its spread over the training pairs'
    differences, so one regularisation strength means the same at every layer (the residual stream's scale
    changes from layer to layer; only the last is normalised)."""
    train, held = layer_features(model, tokenizer, train_rows), layer_features(model, tokenizer, held_rows)
    rows = []
    for layer in range(train.shape[2]):
        scale = (train[:, 0, layer] - train[:, 1, layer]).std(0).clamp(min=1e-6)
        for strength in strengths:
            train_acc, held_acc = probe(train[:, :, layer] / scale, held[:, :, layer] / scale, strength)
            rows.append({"layer": layer, "C": strength, "train_accuracy": train_acc, "heldout_accuracy": held_acc})
            print(f"{task:12s} layer {layer:2d} C={strength:<6} train {train_acc:.3f}  held-out {held_acc:.3f}", flush=True)
    return {"train_pairs": len(train), "heldout_pairs": len(held), "probes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default="runs/quality", help="bench/quality.py's --cache (its full/tasks are read)")
    parser.add_argument("--tasks", nargs="+", default=["readability", "sentiment"])
    parser.add_argument("--strengths", nargs="+", type=float, default=[0.01, 0.1, 1.0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--draw", type=int, default=0, help="bench/quality.py's --draw whose tasks are read")
    parser.add_argument("--by-layer", action="store_true",
                        help="probe the response mean of every layer (features scaled to unit spread) instead of the "
                             "final layer's three poolings")
    args = parser.parse_args()

    from posttrain.models import load_model

    tasks_dir = Path(args.cache) / ("full" if args.draw == 0 else f"full-draw{args.draw}") / "tasks"
    if not (tasks_dir / args.tasks[0] / "prefs_train.jsonl").is_file():
        raise SystemExit(f"{tasks_dir} has no prefs_train.jsonl for {args.tasks[0]}: run bench/quality.py --cache "
                         f"{args.cache} first (it builds the tasks).")
    loaded = load_model(args.model, attach=False, dtype=torch.float32, device=torch.device("cpu"))
    model = loaded.model.eval()
    results = {"model": args.model, "date": time.strftime("%Y-%m-%d"), "draw": args.draw, "tasks": {}}
    RESULTS.mkdir(exist_ok=True)
    for task in args.tasks:
        read = lambda split: [json.loads(line) for line in (tasks_dir / task / f"prefs_{split}.jsonl").open()]
        if args.by_layer:
            results["tasks"][task] = by_layer(model, loaded.tokenizer, read("train"), read("heldout"), args.strengths, task)
            name = "rm_layer_probe" + (f"-draw{args.draw}" if args.draw else "")
            (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
            continue
        train, held = features(model, loaded.tokenizer, read("train")), features(model, loaded.tokenizer, read("heldout"))
        rows = []
        for pooling in ("last", "mean", "response_mean"):
            for strength in args.strengths:
                train_acc, held_acc = probe(train[pooling], held[pooling], strength)
                rows.append({"pooling": pooling, "C": strength, "train_accuracy": train_acc, "heldout_accuracy": held_acc})
                print(f"{task:12s} {pooling:5s} C={strength:<5} train {train_acc:.3f}  held-out {held_acc:.3f}", flush=True)
        results["tasks"][task] = {"train_pairs": len(train["last"]), "heldout_pairs": len(held["last"]), "probes": rows}
    if not args.by_layer:
        (RESULTS / "rm_pooling_probe.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
