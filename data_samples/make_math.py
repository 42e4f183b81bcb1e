#!/usr/bin/env python3
"""Generate the verifiable-reward sample task: short arithmetic and unit-conversion word problems with a numeric
``answer`` field, for reward functions such as ``posttrain.rewards:exact_answer``.

    math.jsonl          300 training prompts (templates T1..T10, numbers drawn from the training ranges)
    math_heldout.jsonl  100 held-out prompts: the same kinds of problem with other numbers, and two templates
                        (marked "held-out only" below) that never appear in training

Every answer is computed, so it is correct. Output is deterministic (fixed seed).

Run:  python3 data_samples/make_math.py
"""

import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 2026
INSTRUCTION = " Reply with the number only."

NAMES = ["Tom", "Sara", "Ali", "Mei", "Lena", "Omar", "Priya", "Jack", "Nina", "Ravi", "Ella", "Sam"]
ITEMS = ["apples", "stickers", "marbles", "pencils", "cards", "books", "shells", "coins", "stamps", "toys"]


def t_add(r):
    name, item, a, b = r.choice(NAMES), r.choice(ITEMS), r.randint(2, 20), r.randint(2, 20)
    return f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?", a + b


def t_sub(r):
    name, item = r.choice(NAMES), r.choice(ITEMS)
    a = r.randint(10, 30)
    b = r.randint(1, a - 1)
    return f"{name} had {a} {item} and gave away {b}. How many {item} are left?", a - b


def t_mul(r):
    n, k = r.randint(2, 9), r.randint(2, 9)
    return f"A box holds {n} eggs. How many eggs are in {k} boxes?", n * k


def t_div(r):
    each, kids = r.randint(2, 9), r.randint(2, 6)
    return f"{each * kids} sweets are shared equally among {kids} children. How many sweets does each child get?", each


def t_minutes(r):
    h = r.randint(1, 6)
    return f"How many minutes are in {h} hours?", 60 * h


def t_cm(r):
    m = r.randint(1, 9)
    return f"How many centimetres are in {m} metres?", 100 * m


def t_grams(r):
    kg = r.randint(1, 9)
    return f"How many grams are in {kg} kilograms?", 1000 * kg


def t_days(r):
    w = r.randint(1, 8)
    return f"How many days are in {w} weeks?", 7 * w


def t_legs(r):
    d = r.randint(2, 9)
    return f"A farmer has {d} dogs. How many legs do the dogs have in total?", 4 * d


def t_price(r):
    p, n = r.randint(2, 9), r.randint(2, 6)
    return f"One pen costs {p} dollars. How many dollars do {n} pens cost?", p * n


def t_seconds(r):  # held-out only
    m = r.randint(1, 30)
    return f"How many seconds are in {m} minutes?", 60 * m


def t_wheels(r):  # held-out only
    c = r.randint(2, 40)
    return f"There are {c} cars in a car park. How many wheels do they have in total?", 4 * c


TRAIN = [t_add, t_sub, t_mul, t_div, t_minutes, t_cm, t_grams, t_days, t_legs, t_price]
HELDOUT_ONLY = [t_seconds, t_wheels]


def rows(r, templates, n, seen):
    out = []
    for _ in range(100 * n):  # enough draws to find n distinct questions in these ranges
        if len(out) == n:
            break
        question, answer = r.choice(templates)(r)
        if question in seen:
            continue
        seen.add(question)
        out.append({"prompt": [{"role": "user", "content": question + INSTRUCTION}], "answer": answer})
    if len(out) < n:
        raise SystemExit(f"only {len(out)} distinct questions; widen the templates' number ranges")
    return out


def main():
    r = random.Random(SEED)
    seen = set()
    train = rows(r, TRAIN, 300, seen)
    heldout = rows(r, TRAIN, 70, seen) + rows(r, HELDOUT_ONLY, 30, seen)
    r.shuffle(heldout)
    for name, data in (("math.jsonl", train), ("math_heldout.jsonl", heldout)):
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            for row in data:
                f.write(json.dumps(row) + "\n")
        print(f"wrote {len(data)} rows to {name}")


if __name__ == "__main__":
    main()
