"""Capability: k-shot multiple-choice accuracy, scored by log-likelihood as lm-evaluation-harness scores it.

A benchmark row is ``{"question": str, "choices": [str, ...], "answer": index or letter, "subject": str}``;
an optional ``"split": "dev"`` marks the rows the shots come from. Shots come, in order, from a separate dev
file (``--benchmark_dev``), else the benchmark's ``split: dev`` rows, else the first k rows of each subject
(which are then not scored). A question is shown only the first k dev rows of its own subject, never itself.

The prompt (``--mc_format cloze``, the default; a reader can check it against ``kshot_prompt``)::

    The following are multiple choice questions (with answers) about {subject}.\\n\\n
    Question: {shot question}\\nAnswer: {shot answer text}\\n\\n          (k times)
    Question: {question}\\nAnswer:

and each choice is scored as the continuation " {choice}". With ``--mc_format letters`` (MMLU's own
layout) every question lists its choices as "A. ..." lines, shots answer with the letter, and the
continuations are " A", " B", ... (``subject`` has its underscores shown as spaces; a row without a subject
gets the header without "about ...").

Metrics, as lm-eval's ``ConfigurableTask.process_results`` (lm_eval/api/task.py, version 0.4.13) defines them,
from ``ll[i]`` = sum of log p(continuation tokens of choice i | context):
  acc       1 if argmax_i ll[i] is the answer
  acc_norm  1 if argmax_i ll[i] / len(choice_i) is the answer, where len is the choice string's length in
            characters (``len(str)``: the same as its UTF-8 byte length for ASCII text; lm-eval's ``acc_bytes``
            divides by bytes)
Ties go to the first choice (numpy's argmax). Context and continuation are tokenised as lm-eval's
``_encode_pair`` does: the whole string, then the context alone; the continuation is what follows.
"""

from __future__ import annotations

import copy
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from posttrain.config import ConfigError
from posttrain.data import DataError, read_rows
from posttrain.generation import cache_of, with_cache

MC_FORMATS = """\
Accepted multiple-choice rows (.jsonl, .json array, .parquet):
  {"question": "...", "choices": ["...", "...", ...], "answer": 0 (index) or "A" (letter), "subject": "..."}
  optional "split": "dev" marks a row as a shot (any other value, or none, is scored)"""
LETTERS = string.ascii_uppercase
BOOTSTRAP_SAMPLES = 1000
TOKENS_PER_BATCH = 8192  # rows x (prefix + row width) per forward pass: bounds the repeated KV cache in memory


@dataclass
class Question:
    question: str
    choices: list[str]
    answer: int
    subject: str
    split: str = ""


@dataclass
class Benchmark:
    source: str
    questions: list[Question]  # the scored questions
    shots: dict[str, list[Question]]  # subject -> its k shots, in order
    shots_from: str  # where the shots came from, in words


# ---------------------------------------------------------------------------------------------
# Reading and validating rows
# ---------------------------------------------------------------------------------------------


def _question(data: dict[str, Any], source: str, where: str) -> Question:
    def bad(problem: str) -> DataError:
        return DataError(source, where, problem, MC_FORMATS)

    text = data.get("question")
    if not isinstance(text, str) or not text.strip():
        raise bad("field 'question' is missing or empty.")
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) < 2:
        raise bad(f"field 'choices' must be a list of at least 2 strings, got {choices!r}.")
    for i, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice.strip():
            raise bad(f"field 'choices[{i}]' must be a non-empty string, got {choice!r}.")
    if len(set(choices)) != len(choices):
        raise bad("field 'choices' has the same choice twice; each choice must be different.")
    answer = data.get("answer")
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in LETTERS:
        index = LETTERS.index(answer.strip().upper())
    elif isinstance(answer, int) and not isinstance(answer, bool):
        index = answer
    else:
        raise bad(f"field 'answer' must be a choice index (0, 1, ...) or a letter (A, B, ...), got {answer!r}.")
    if not 0 <= index < len(choices):
        raise bad(f"field 'answer' is {answer!r}, but there are only {len(choices)} choices "
                  f"(indices 0-{len(choices) - 1}, letters A-{LETTERS[len(choices) - 1]}).")
    subject = data.get("subject", "")
    if not isinstance(subject, str):
        raise bad(f"field 'subject' must be a string, got {subject!r}.")
    split = data.get("split", "")
    return Question(text.strip(), list(choices), index, subject.strip(), str(split or ""))


def read_questions(path: str | Path) -> list[Question]:
    """Every row of a benchmark file as a Question; a bad row is one DataError naming the file, line and field."""
    return [_question(row.data, str(path), row.where) for row in read_rows(path, MC_FORMATS)]


def _by_subject(questions: list[Question]) -> dict[str, list[Question]]:
    groups: dict[str, list[Question]] = {}
    for q in questions:
        groups.setdefault(q.subject, []).append(q)
    return groups


def load_benchmark(path: str | Path, shots: int, dev: str | Path = "", max_questions: int = 0) -> Benchmark:
    """The scored questions and each subject's shots (see the module docstring for where shots come from).

    ``max_questions`` > 0 keeps that many scored questions, taken in turn from each subject (in file order),
    so a subsample still covers every subject."""
    if shots < 0:
        raise DataError(str(path), None, f"--shots must be 0 or more, got {shots}.")
    rows = read_questions(path)
    if dev:
        pool, scored, shots_from = read_questions(dev), rows, f"the first {shots} rows of each subject in {dev}"
    elif any(q.split == "dev" for q in rows):
        pool = [q for q in rows if q.split == "dev"]
        scored = [q for q in rows if q.split != "dev"]
        shots_from = f"the first {shots} rows with split 'dev' of each subject"
    else:
        pool, scored = rows, []
        for subject_rows in _by_subject(rows).values():
            scored += subject_rows[shots:]
        shots_from = f"the first {shots} rows of each subject (not scored)"
    by_subject = _by_subject(pool)
    chosen: dict[str, list[Question]] = {}
    for subject in _by_subject(scored):
        available = by_subject.get(subject, [])
        if len(available) < shots:
            source = dev or path
            raise DataError(str(source), None, f"subject '{subject or '(none)'}' has {len(available)} dev rows, fewer than "
                            f"--shots {shots}; add dev rows for it or lower --shots.")
        chosen[subject] = available[:shots]
    if not scored:
        raise DataError(str(path), None, "no questions left to score after taking the shots; add rows or lower --shots.")
    if max_questions > 0:
        queues = list(_by_subject(scored).values())
        kept: list[Question] = []
        while len(kept) < min(max_questions, len(scored)):
            for queue in queues:
                if queue and len(kept) < max_questions:
                    kept.append(queue.pop(0))
        scored = kept
    return Benchmark(str(path), scored, chosen, shots_from)


# ---------------------------------------------------------------------------------------------
# The k-shot prompt
# ---------------------------------------------------------------------------------------------


def header(subject: str) -> str:
    about = f" about {subject.replace('_', ' ')}" if subject else ""
    return f"The following are multiple choice questions (with answers){about}.\n\n"


def question_block(q: Question, mc_format: str) -> str:
    if mc_format == "letters":
        listed = "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(q.choices))
        return f"{q.question}{listed}\nAnswer:"
    return f"Question: {q.question}\nAnswer:"


def choice_strings(q: Question, mc_format: str) -> list[str]:
    """What each choice is scored as (without the space before it) and what acc_norm divides by."""
    return list(LETTERS[:len(q.choices)]) if mc_format == "letters" else list(q.choices)


def kshot_prompt(shots: list[Question], q: Question, mc_format: str = "cloze") -> str:
    """Header, the shots with their answers, then the question, ending at "Answer:" (no trailing space)."""
    solved = "".join(f"{question_block(s, mc_format)} {choice_strings(s, mc_format)[s.answer]}\n\n" for s in shots)
    return header(q.subject) + solved + question_block(q, mc_format)


# ---------------------------------------------------------------------------------------------
# Scoring: log-likelihood of each choice, the subject's shared prompt prefix run once
# ---------------------------------------------------------------------------------------------


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``_encode_pair``: trailing spaces move to the continuation; continuation = whole[len(context):]."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    context_ids = tokenizer.encode(context, add_special_tokens=False)
    return context_ids, whole[len(context_ids):]


def _common_prefix(sequences: list[list[int]]) -> int:
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for i in range(length):
        if any(s[i] != first[i] for s in sequences):
            return i
    return length


def _batches(rows: list[tuple], shared: int) -> list[list[tuple]]:
    """Consecutive runs of rows, each as many as fit (prefix + widest row) x rows <= TOKENS_PER_BATCH."""
    batches, batch, width = [], [], 0
    for row in rows:
        wider = max(width, len(row[2]))
        if batch and (shared + wider) * (len(batch) + 1) > TOKENS_PER_BATCH:
            batches.append(batch)
            batch, wider = [], len(row[2])
        batch.append(row)
        width = wider
    return batches + [batch]


def _batch_loglikelihoods(model, pad_id: int, cache, shared: int, batch: list[tuple]) -> list[float]:
    """log p(continuation | context) of each row (r, c, tokens = rest of context + continuation, n continuation
    tokens), all after the same ``shared`` prefix tokens whose KV cache is ``cache`` (None when shared is 0).

    Rows are left-padded, so every continuation ends at the last column and only the last (longest
    continuation + 1) columns need the vocabulary projection; position ids are given, so padding does not
    shift a row's positions."""
    device = next(model.parameters()).device
    width = max(len(tokens) for _, _, tokens, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    positions = torch.full((len(batch), width), shared, dtype=torch.long)
    mask = torch.zeros((len(batch), shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for i, (_, _, tokens, _) in enumerate(batch):
        pad = width - len(tokens)
        ids[i, pad:] = torch.tensor(tokens)
        positions[i, pad:] = torch.arange(shared, shared + len(tokens))
        mask[i, shared + pad:] = 1
    past = None
    if cache is not None:
        past = copy.deepcopy(cache)  # the forward pass appends to it
        past.batch_repeat_interleave(len(batch))
    keep = max(n for *_, n in batch) + 1
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                   use_cache=past is not None, **with_cache(past), logits_to_keep=keep).logits.float()
    logprobs = torch.log_softmax(logits, -1)  # (rows, keep, vocab): column k holds position width - keep + k
    out = []
    for i, (_, _, tokens, n) in enumerate(batch):
        # the n continuation tokens fill the last n columns; each is predicted by the column before it
        targets = torch.tensor(tokens[-n:], device=logits.device)
        out.append(logprobs[i, keep - n - 1:keep - 1].gather(-1, targets[:, None]).sum().item())
    return out


@torch.no_grad()
def choice_loglikelihoods(model, tokenizer, requests: list[tuple[str, list[str]]], groups: list[str] | None = None,
                          progress: str = "") -> list[list[float]]:
    """Sum of log p(continuation | context) for every (context, continuations) request, one list per request.

    Requests of one group (a subject: the same header and shots) share the token prefix of their contexts:
    it runs once, its KV cache is repeated for a batch of rows, and each row is only the rest of its context
    plus one continuation. A request's numbers are those of a plain forward pass of its context and
    continuation tokens (tested)."""
    from tqdm.auto import tqdm

    encoded = []  # (request, choice, context ids, continuation ids)
    for r, (context, continuations) in enumerate(requests):
        for c, continuation in enumerate(continuations):
            context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
            if not continuation_ids:  # the tokeniser merged the choice into its context: nothing to score
                raise ConfigError(f"choice {continuation.strip()!r} adds no tokens after its prompt; it cannot be scored.")
            encoded.append((r, c, context_ids, continuation_ids))
    by_group: dict[str, list[tuple]] = {}
    for item in encoded:
        by_group.setdefault(groups[item[0]] if groups else "", []).append(item)
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(len(ids) + len(cont) for *_, ids, cont in encoded)
    if limit and longest > limit:
        raise ConfigError(f"a k-shot prompt and its choice take {longest} tokens, more than the model's {limit}; lower --shots.")
    out = [[0.0] * len(continuations) for _, continuations in requests]
    bar = tqdm(total=len(encoded), desc=progress or "scoring choices", unit="choice", disable=not progress)
    for items in by_group.values():
        # the prefix all of the group's contexts share, at least one token short of the shortest
        shared = min(_common_prefix([ids for *_, ids, _ in items]), min(len(ids) for *_, ids, _ in items) - 1)
        prefix = torch.tensor([items[0][2][:shared]], device=next(model.parameters()).device)
        cache = cache_of(model(input_ids=prefix, use_cache=True)) if shared > 0 else None
        rows = [(r, c, ids[shared:] + cont, len(cont)) for r, c, ids, cont in items]
        for batch in _batches(rows, shared):
            for (r, c, _, _), value in zip(batch, _batch_loglikelihoods(model, tokenizer.pad_token_id or 0, cache, shared, batch)):
                out[r][c] = value
            bar.update(len(batch))
    bar.close()
    return out


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


@dataclass
class Scores:
    """Per scored question (in benchmark order): subject, correctness under acc and acc_norm, 1/choices."""

    subjects: list[str] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)
    acc_norm: list[float] = field(default_factory=list)
    chance: list[float] = field(default_factory=list)
    loglikelihoods: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def grade(benchmark: Benchmark, loglikelihoods: list[list[float]], mc_format: str = "cloze") -> Scores:
    """acc and acc_norm of every question from its choices' log-likelihoods (see the module docstring)."""
    scores = Scores()
    for q, ll in zip(benchmark.questions, loglikelihoods, strict=True):
        lengths = [float(len(s)) for s in choice_strings(q, mc_format)]
        scores.subjects.append(q.subject)
        scores.acc.append(float(_first_argmax(ll) == q.answer))
        scores.acc_norm.append(float(_first_argmax([v / n for v, n in zip(ll, lengths)]) == q.answer))
        scores.chance.append(1.0 / len(q.choices))
        scores.loglikelihoods.append(list(ll))
    return scores


def score_benchmark(model, tokenizer, benchmark: Benchmark, mc_format: str = "cloze", progress: str = "") -> Scores:
    requests = [(kshot_prompt(benchmark.shots[q.subject], q, mc_format), [" " + s for s in choice_strings(q, mc_format)])
                for q in benchmark.questions]
    groups = [q.subject for q in benchmark.questions]
    return grade(benchmark, choice_loglikelihoods(model, tokenizer, requests, groups, progress), mc_format)


def summarise(scores: Scores) -> dict[str, Any]:
    """Per subject (acc, acc_norm, chance, questions) and their macro average (each subject counts once)."""
    subjects: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(scores.subjects):
        rows = [i for i, s in enumerate(scores.subjects) if s == name]
        subjects[name or "(none)"] = {key: sum(getattr(scores, key)[i] for i in rows) / len(rows)
                                      for key in ("acc", "acc_norm", "chance")} | {"questions": len(rows)}
    macro = {key: sum(s[key] for s in subjects.values()) / len(subjects) for key in ("acc", "acc_norm", "chance")}
    return {**macro, "questions": len(scores.subjects), "subjects": subjects}


def paired_bootstrap(model: list[float], baseline: list[float], subjects: list[str],
                     samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """(difference of macro averages, 2.5th and 97.5th percentile of its bootstrap distribution).

    Questions are resampled with replacement within each subject (so each keeps its size) and the same
    resampled questions are used for both models: a paired, stratified bootstrap."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a, b, names = np.asarray(model), np.asarray(baseline), np.asarray(subjects)
    per_subject, observed = [], []
    for name in dict.fromkeys(subjects):
        rows = np.flatnonzero(names == name)
        diff = a[rows] - b[rows]
        observed.append(diff.mean())
        per_subject.append(diff[rng.integers(0, len(rows), size=(samples, len(rows)))].mean(1))
    macro = np.mean(per_subject, axis=0)
    return float(np.mean(observed)), float(np.percentile(macro, 2.5)), float(np.percentile(macro, 97.5))
