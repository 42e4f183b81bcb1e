"""Read datasets, validate rows, convert the supported formats, and tokenise with chat templates.

Every problem in a file is reported as one :class:`DataError` naming the file, the line (or item/row),
the field, and the formats this module accepts. Nothing is dropped silently: rows cut for length are
counted and reported by the stage.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from posttrain.config import ConfigError

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}

SFT_FORMATS = """\
Accepted SFT formats (one JSON object per line in .jsonl; a JSON array in .json; rows in .parquet, a datasets folder
or a hub dataset org/name; --data_columns renames columns named otherwise):
  messages:           {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": "..."}, ...]}
                      (an assistant turn may hold "tool_calls": [{"type": "function", "function": {"name": ...,
                      "arguments": {...}}}], where the chat template renders them)
  prompt/completion:  {"prompt": "...", "completion": "..."}  (or both as lists of messages)
  alpaca:             {"instruction": "...", "input": "...", "output": "..."}
  sharegpt:           {"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}
  plain text:         {"text": "..."}  (every token is trained)"""

PREFERENCE_FORMATS = """\
Accepted preference formats:
  explicit prompt:    {"prompt": "..." or [messages], "chosen": "..." or [messages], "rejected": "..." or [messages]}
  implicit prompt:    {"chosen": [full conversation], "rejected": [full conversation]}  (sharing the prompt turns)
  optional per-pair margin for reward models: {"margin": 1.0}"""

PROMPT_FORMATS = """\
Accepted prompt formats:
  {"prompt": "..."}  or  {"prompt": [{"role": "user", "content": "..."}]}  or  {"messages": [... ending with a user turn]}"""


class DataError(ValueError):
    """A bad dataset row; the message says the file, the line, the field and the accepted formats."""

    def __init__(self, source: str, where: str | None, problem: str, formats: str = ""):
        self.source, self.where, self.problem = source, where, problem
        location = f"{source}, {where}" if where else source
        super().__init__(f"{location}: {problem}" + (f"\n{formats}" if formats else ""))


@dataclass
class Row:
    data: dict[str, Any]
    where: str  # "line 12", "item 3" or "row 7"


@dataclass
class Table:
    """Normalised rows of one dataset, and where they came from."""

    source: str
    rows: list[dict[str, Any]]
    places: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def read_rows(path: str | Path, formats: str = SFT_FORMATS, split: str = "", subset: str = "",
              columns: dict[str, str] | None = None) -> list[Row]:
    """Rows of a .jsonl/.json/.parquet file, a saved ``datasets`` folder, a folder of data files or a hub dataset
    (see data_hub.py), each with its place in the file, columns renamed by ``columns``."""
    from posttrain.data_hub import is_saved_dataset, load_dataset_rows, map_columns
    from posttrain.hub import is_hub_id

    source = str(path)
    if is_hub_id(source) or (Path(path).is_dir() and not is_saved_dataset(Path(path))):
        rows = load_dataset_rows(source, split, subset, formats)
        if not rows:
            raise DataError(source, None, "the dataset is empty.", formats)
        return map_columns(rows, columns or {}, source, formats)
    if subset or (split and not Path(path).is_dir()):
        raise ConfigError(f"{source}: --data_split and --data_subset choose within a hub dataset or a datasets folder, "
                          "not a file; leave them out.")
    rows = _file_rows(Path(path), formats, split)
    return map_columns(rows, columns or {}, source, formats)


def _file_rows(path: Path, formats: str, split: str) -> list[Row]:
    source = str(path)
    if not path.exists():
        raise DataError(source, None, "no such file or folder (a hub dataset is given as org/name).")
    if path.is_dir():
        try:
            from datasets import load_from_disk

            dataset = load_from_disk(str(path))
        except Exception as err:  # noqa: BLE001 - any failure here means "not a datasets folder"
            raise DataError(source, None, f"is a folder but not a saved `datasets` dataset ({err}).", formats) from None
        from posttrain.data_hub import pick_split

        dataset, _ = pick_split(dataset, split, source)  # a DatasetDict: --data_split, else train, else the only one
        rows = [Row(dict(r), f"row {i + 1}") for i, r in enumerate(dataset)]
    elif path.suffix == ".jsonl":
        rows = []
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                line = _utf8(raw, source, f"line {number}", formats)
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(source, f"line {number}", f"not valid JSON ({err.msg} at column {err.colno}).", formats) from None
                if not isinstance(value, dict):
                    raise DataError(source, f"line {number}", "each line must be a JSON object.", formats)
                rows.append(Row(value, f"line {number}"))
    elif path.suffix == ".json":
        text = _utf8(path.read_bytes(), source, None, formats)
        if not text.strip():
            raise DataError(source, None, "the dataset is empty.", formats)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(source, f"line {err.lineno}", f"not valid JSON ({err.msg}).", formats) from None
        if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), list):
            value = next(iter(value.values()))  # {"train": [...]}
        if not isinstance(value, list):
            raise DataError(source, None, "a .json file must hold an array of objects.", formats)
        rows = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise DataError(source, f"item {i + 1}", "each item must be a JSON object.", formats)
            rows.append(Row(item, f"item {i + 1}"))
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(path).to_pylist()
        except Exception as err:  # noqa: BLE001
            raise DataError(source, None, f"cannot read parquet ({err}).", formats) from None
        rows = [Row(r, f"row {i + 1}") for i, r in enumerate(records)]
    else:
        raise DataError(source, None, f"unsupported file type '{path.suffix}'; use .jsonl, .json, .parquet or a datasets folder.", formats)
    if not rows:
        raise DataError(source, None, "the dataset is empty.", formats)
    return rows


def _utf8(raw: bytes, source: str, where: str | None, formats: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(source, where, f"not UTF-8 text (byte {err.start + 1} of {'the line' if where else 'the file'} "
                                       "is not valid UTF-8); is this a binary file? Save the data as UTF-8 JSON.", formats) from None


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


def _text(value: Any, source: str, where: str, name: str, formats: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise DataError(source, where, f"field '{name}' must be a string, got {type(value).__name__}.", formats)
    if not allow_empty and not value.strip():
        raise DataError(source, where, f"field '{name}' is empty.", formats)
    return value


def _messages(value: Any, source: str, where: str, name: str, formats: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(source, where, f"field '{name}' must be a non-empty list of messages.", formats)
    messages = []
    for i, message in enumerate(value):
        here = f"{name}[{i}]"
        if not isinstance(message, dict) or "role" not in message or ("content" not in message and not message.get("tool_calls")):
            raise DataError(source, where, f"field '{here}' must be an object with 'role' and 'content'.", formats)
        role = message["role"]
        if role not in ROLES:
            raise DataError(source, where, f"field '{here}.role' is {role!r}, an unknown role; use one of {', '.join(ROLES)}.", formats)
        calls = message.get("tool_calls")
        if calls is not None and (role != "assistant" or not isinstance(calls, list) or not all(
                isinstance(c, dict) and isinstance(c.get("function"), dict) and isinstance(c["function"].get("name"), str)
                for c in calls)):
            raise DataError(source, where, f"field '{here}.tool_calls' must be on an assistant turn, a list of "
                                           '{"type": "function", "function": {"name": ..., "arguments": ...}}.', formats)
        content = _text(message.get("content") if message.get("content") is not None or not calls else "", source, where,
                        f"{here}.content", formats, allow_empty=role != "assistant" or bool(calls))
        messages.append({"role": role, "content": content,
                         **{k: message[k] for k in ("tool_calls", "name", "tool_call_id") if message.get(k) is not None}})
    return messages


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


# ---------------------------------------------------------------------------------------------
# SFT data
# ---------------------------------------------------------------------------------------------


def sft_example(row: Row, source: str) -> dict[str, Any]:
    """One row in any supported SFT format -> {"messages": [...]} or plain {"prompt": str, "completion": str}."""
    data, where, formats = row.data, row.where, SFT_FORMATS
    if "messages" in data:
        messages = _messages(data["messages"], source, where, "messages", formats)
        if not any(m["role"] == "assistant" for m in messages):
            raise DataError(source, where, "field 'messages' has no assistant turn to learn from.", formats)
        return {"messages": messages}
    if "conversations" in data:
        turns = data["conversations"]
        if not isinstance(turns, list) or not turns:
            raise DataError(source, where, "field 'conversations' must be a non-empty list.", formats)
        converted = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
                raise DataError(source, where, f"field 'conversations[{i}]' must have 'from' and 'value'.", formats)
            if not isinstance(turn["from"], str) or turn["from"] not in SHAREGPT_ROLES:
                raise DataError(source, where, f"field 'conversations[{i}].from' is {turn['from']!r}, an unknown role; use one of {', '.join(SHAREGPT_ROLES)}.", formats)
            role = SHAREGPT_ROLES[turn["from"]]
            value = _text(turn["value"], source, where, f"conversations[{i}].value", formats, allow_empty=role != "assistant")
            converted.append({"role": role, "content": value})
        return sft_example(Row({"messages": converted}, where), source)
    if "instruction" in data or "output" in data:
        for name in ("instruction", "output"):
            if name not in data:
                raise DataError(source, where, f"missing field '{name}' (alpaca rows need instruction and output).", formats)
        instruction = _text(data["instruction"], source, where, "instruction", formats)
        extra = _text(data.get("input") or "", source, where, "input", formats, allow_empty=True)
        output = _text(data["output"], source, where, "output", formats)
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = ([{"role": "system", "content": data["system"]}] if data.get("system") else [])
        return {"messages": messages + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]}
    if "prompt" in data or "completion" in data:
        for name in ("prompt", "completion"):
            if name not in data:
                raise DataError(source, where, f"missing field '{name}' (prompt/completion rows need both).", formats)
        if _is_messages(data["prompt"]) or _is_messages(data["completion"]):
            prompt = _messages(data["prompt"], source, where, "prompt", formats)
            completion = _messages(data["completion"], source, where, "completion", formats)
            if not any(m["role"] == "assistant" for m in completion):
                raise DataError(source, where, "field 'completion' has no assistant message.", formats)
            return {"messages": prompt + completion}
        return {"prompt": _text(data["prompt"], source, where, "prompt", formats),
                "completion": _text(data["completion"], source, where, "completion", formats)}
    if "text" in data:
        return {"text": _text(data["text"], source, where, "text", formats)}
    raise DataError(source, where, f"no recognised fields (found {sorted(data)}).", formats)


def load_sft(path: str | Path, split: str = "", subset: str = "", columns: dict[str, str] | None = None) -> Table:
    source = str(path)
    rows = read_rows(path, SFT_FORMATS, split, subset, columns)
    examples = [sft_example(row, source) for row in rows]
    _check_one_kind(examples, rows, source, SFT_FORMATS)
    return Table(source, examples, [r.where for r in rows])


def _check_one_kind(examples: list[dict], rows: list[Row], source: str, formats: str) -> None:
    names = {"messages": "conversational", "prompt": "plain-text prompt/completion", "text": "plain text"}
    kinds = [next(k for k in names if k in e) for e in examples]
    for kind, row in zip(kinds, rows):
        if kind != kinds[0]:
            raise DataError(source, row.where, f"mixes {names[kind]} and {names[kinds[0]]} rows (the first row is "
                                               f"{names[kinds[0]]}); use one kind per file.", formats)


# ---------------------------------------------------------------------------------------------
# Preference data
# ---------------------------------------------------------------------------------------------


def preference_example(row: Row, source: str) -> dict[str, Any]:
    """One preference row -> {"prompt", "chosen", "rejected"[, "margin"]} in TRL's explicit-prompt format."""
    data, where, formats = row.data, row.where, PREFERENCE_FORMATS
    for name in ("chosen", "rejected"):
        if name not in data:
            raise DataError(source, where, f"missing field '{name}'.", formats)
    if "prompt" not in data:
        # implicit prompt: the shared leading turns are the prompt
        chosen = _messages(data["chosen"], source, where, "chosen", formats)
        rejected = _messages(data["rejected"], source, where, "rejected", formats)
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        if shared == 0:
            raise DataError(source, where, "implicit-prompt rows need 'chosen' and 'rejected' to start with the same prompt turns.", formats)
        example = {"prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}
    elif _is_messages(data["prompt"]):
        example = {"prompt": _messages(data["prompt"], source, where, "prompt", formats),
                   "chosen": _messages(data["chosen"], source, where, "chosen", formats),
                   "rejected": _messages(data["rejected"], source, where, "rejected", formats)}
    else:
        example = {"prompt": _text(data["prompt"], source, where, "prompt", formats),
                   "chosen": _text(data["chosen"], source, where, "chosen", formats),
                   "rejected": _text(data["rejected"], source, where, "rejected", formats)}
    for name in ("chosen", "rejected"):
        value = example[name]
        if isinstance(value, list):
            if not value or not any(m["role"] == "assistant" and m["content"].strip() for m in value):
                raise DataError(source, where, f"field '{name}' has no non-empty assistant response.", formats)
    if example["chosen"] == example["rejected"]:
        raise DataError(source, where, "'chosen' and 'rejected' are identical; a pair must differ to teach a preference.", formats)
    if "margin" in data and data["margin"] is not None:
        if not isinstance(data["margin"], (int, float)) or isinstance(data["margin"], bool) or not math.isfinite(data["margin"]):
            raise DataError(source, where, f"field 'margin' must be a finite number, got {data['margin']!r}.", formats)
        example["margin"] = float(data["margin"])
    return example


def load_preferences(path: str | Path, split: str = "", subset: str = "", columns: dict[str, str] | None = None) -> Table:
    source = str(path)
    rows = read_rows(path, PREFERENCE_FORMATS, split, subset, columns)
    examples = [preference_example(row, source) for row in rows]
    kinds = [isinstance(e["prompt"], list) for e in examples]
    for kind, row in zip(kinds, rows):
        if kind != kinds[0]:
            raise DataError(source, row.where, "mixes plain-text and conversational rows; use one kind per file.", PREFERENCE_FORMATS)
    has_margin = ["margin" in e for e in examples]
    if any(has_margin) and not all(has_margin):
        missing = rows[has_margin.index(False)].where
        raise DataError(source, missing, "field 'margin' is missing here but present on other rows; give every row a margin or none.", PREFERENCE_FORMATS)
    return Table(source, examples, [r.where for r in rows])


# ---------------------------------------------------------------------------------------------
# Prompt data (RL, evaluation)
# ---------------------------------------------------------------------------------------------


def prompt_example(row: Row, source: str) -> list[dict[str, str]] | str:
    data, where, formats = row.data, row.where, PROMPT_FORMATS
    if "prompt" in data:
        if _is_messages(data["prompt"]):
            messages = _messages(data["prompt"], source, where, "prompt", formats)
        else:
            return _text(data["prompt"], source, where, "prompt", formats)
    elif "messages" in data:
        messages = _messages(data["messages"], source, where, "messages", formats)
        while messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]  # a conversation's prompt is everything before the final answer
    else:
        raise DataError(source, where, "missing field 'prompt'.", formats)
    if not messages or messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise DataError(source, where, "the prompt must end with a non-empty user turn.", formats)
    return messages


def load_prompts(path: str | Path, split: str = "", subset: str = "", columns: dict[str, str] | None = None) -> Table:
    """Prompt rows: {"prompt": text or messages} plus the row's other columns (reward functions may read them)."""
    source = str(path)
    rows = read_rows(path, PROMPT_FORMATS, split, subset, columns)
    examples = [{"prompt": prompt_example(row, source), **{k: v for k, v in row.data.items() if k not in ("prompt", "messages")}}
                for row in rows]
    return Table(source, examples, [r.where for r in rows])


# ---------------------------------------------------------------------------------------------
# Tokenisation
# ---------------------------------------------------------------------------------------------


@contextmanager
def chat_template_errors(source: str, where: str | None) -> Iterator[None]:
    """A conversation the chat template refuses (a role it has no place for, turns that do not alternate: the
    template's raise_exception, or transformers' ValueError) as one DataError naming the row."""
    from jinja2 import TemplateError

    try:
        yield
    except (TemplateError, ValueError) as err:
        if isinstance(err, (DataError, ConfigError)):  # already one clear message (ConfigError is a ValueError)
            raise
        raise DataError(source, where, f"the model's chat template refused this conversation: {str(err).splitlines()[0]}. "
                        "Change the row to what the template accepts (e.g. fold a system message into the first user "
                        "turn, or alternate user and assistant turns), or train a model whose template takes it.") from None


def check_tools_rendered(tokenizer, messages: list[dict[str, Any]]) -> None:
    """Refuse a conversation with tool calls or tool results that the chat template leaves out of its text (many
    templates have no place for them): training on it would drop them without a word."""
    calls = [c["function"]["name"] for m in messages for c in m.get("tool_calls", [])]
    results = [m["content"] for m in messages if m["role"] == "tool" and m["content"].strip()]
    if not calls and not results:
        return
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    missing = [f"the tool call {name!r}" for name in calls if name not in text]
    missing += [f"the tool result {content[:30]!r}" for content in results if content not in text]
    if missing:
        raise ValueError(f"it leaves out {', '.join(missing)}; use a model whose template renders tool calls, or "
                         "--chat_template with one that does")


def _where(messages: list[dict[str, str]]) -> str:
    """A conversation named by its first words, where its row is not known."""
    first = next((m["content"] for m in messages if m.get("content")), "")
    return f"the conversation starting {first[:40]!r}"


def render_prompt(tokenizer, prompt: list[dict[str, str]] | str) -> str:
    """Prompt text ready for generation: the chat template with the assistant header, or plain text."""
    if isinstance(prompt, str):
        return prompt
    with chat_template_errors("the data", _where(prompt)):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def paired_prompt(prompt: list[dict[str, str]] | str, response: list[dict[str, str]] | str) -> list[dict[str, str]] | str:
    """The prompt as :func:`render_response` renders it beside ``response``: plain text when both are plain text,
    else chat messages (a plain prompt becomes one user turn)."""
    if isinstance(prompt, str):
        return prompt if isinstance(response, str) else [{"role": "user", "content": prompt}]
    return list(prompt)


def render_response(tokenizer, prompt: list[dict[str, str]] | str, response: list[dict[str, str]] | str) -> str:
    """Prompt and response as one text, as a reward model or DPO reads them.

    A conversational prompt gets the chat template over prompt + response (a string response becomes one
    assistant turn); a plain-text prompt and response are joined as they are.
    """
    messages = paired_prompt(prompt, response)
    if isinstance(messages, str):
        return prompt + response
    messages += [{"role": "assistant", "content": response}] if isinstance(response, str) else list(response)
    with chat_template_errors("the data", _where(messages)):
        return tokenizer.apply_chat_template(messages, tokenize=False)


def encode_response(tokenizer, prompt: list[dict[str, str]] | str, response: list[dict[str, str]] | str,
                    plain_suffix: str = "") -> list[int]:
    """Token ids of :func:`render_response`; ``plain_suffix`` (e.g. EOS) ends plain-text responses.

    Rendered chat text already holds the template's special tokens; plain text gets the tokenizer's own (a BOS).
    """
    plain = isinstance(prompt, str) and isinstance(response, str)
    text = render_response(tokenizer, prompt, response) + (plain_suffix if plain else "")
    return tokenizer(text, add_special_tokens=plain)["input_ids"]


def count_over_length(examples: list[dict[str, Any]], tokenizer, max_length: int, plain_suffix: str = "") -> int:
    """Preference pairs whose prompt + chosen or prompt + rejected runs past ``max_length`` tokens."""
    return sum(
        1 for e in examples
        if max(len(encode_response(tokenizer, e["prompt"], e[side], plain_suffix)) for side in ("chosen", "rejected")) > max_length
    )


def _segments(tokenizer, messages: list[dict[str, str]]) -> Iterable[tuple[str, bool]]:
    """Split a rendered conversation into (text, is_assistant) pieces by rendering it turn by turn.

    This works with any chat template whose rendering of a conversation extends the rendering of its
    first turns (true of ChatML, Llama, Mistral, Gemma templates); the check below names the problem otherwise.
    """
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not head.startswith(done) or not upto.startswith(head):
            raise ConfigError("--loss-on assistant: the model's chat template rewrites earlier turns, so its assistant "
                              "tokens cannot be located. Train with --loss-on all, or use a model whose template renders "
                              "a conversation as the rendering of its first turns plus the next.")
        answer = upto[len(head):]
        body = answer.rstrip()  # the turn's text and end token; trailing newlines are template glue
        yield head[len(done):], False
        yield body, True
        done = head + body
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    yield full[len(done):], False


@dataclass
class TokenisedSFT:
    rows: list[dict[str, list[int]]]
    truncated: int  # rows cut to max_length
    dropped: int  # rows with no trainable token left after the cut


def tokenise_sft(examples: list[dict[str, Any]], tokenizer, max_length: int, loss_on: str = "assistant",
                 source: str = "the data", places: list[str] | None = None) -> TokenisedSFT:
    """Token ids and labels (-100 where no loss) for each SFT example; cuts to ``max_length`` and counts the cuts.
    ``source`` and ``places`` (a Table's) name the row the chat template refuses, if it refuses one."""
    rows, truncated, dropped = [], 0, 0
    for index, example in enumerate(examples):
        ids: list[int] = []
        labels: list[int] = []
        if "messages" in example:
            with chat_template_errors(source, places[index] if places else f"example {index + 1}"):
                check_tools_rendered(tokenizer, example["messages"])
                pieces = list(_segments(tokenizer, example["messages"]))
        elif "text" in example:  # plain text: no prompt, every token is trained
            pieces = [(example["text"] + (tokenizer.eos_token or ""), True)]
        else:
            pieces = [(example["prompt"], False), (example["completion"] + (tokenizer.eos_token or ""), True)]
        for text, trained in pieces:
            if not text:
                continue
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids.extend(piece)
            labels.extend(piece if trained or loss_on == "all" else [-100] * len(piece))
        if len(ids) > max_length:
            truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        if all(label == -100 for label in labels):
            dropped += 1
            continue
        rows.append({"input_ids": ids, "labels": labels})
    return TokenisedSFT(rows, truncated, dropped)


def split_holdout(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded (train, held-out) split; ``fraction`` of 0 returns no held-out rows."""
    import random

    if fraction <= 0:
        return list(items), []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(len(items) * fraction)))
    if n_eval >= len(items):
        raise ConfigError(f"--train.eval_split {fraction} holds out {n_eval} of the {len(items)} rows and leaves none to "
                          "train on; lower --train.eval_split, or use more data.")
    held = set(order[:n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]
