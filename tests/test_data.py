"""SFT data: every format converts, every file kind reads, bad input names file/line/field, the loss mask is right."""

from __future__ import annotations

import json

import pytest

from posttrain.data import SFT_FORMATS, DataError, load_sft, split_holdout, tokenise_sft

# ---------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------


def test_messages_rows_pass_through(samples):
    table = load_sft(samples / "sft_messages.jsonl")
    assert len(table) == 225
    first = json.loads((samples / "sft_messages.jsonl").read_text().splitlines()[0])
    assert table.rows[0] == {"messages": first["messages"]}
    assert table.places[0] == "line 1"


def test_plain_prompt_completion_stays_plain(samples):
    table = load_sft(samples / "sft_prompt_completion.jsonl")
    assert len(table) == 12
    assert table.rows[0] == {
        "prompt": "What is an adjective?",
        "completion": "An adjective is a word that describes a noun, like 'red', 'tall' or 'happy' in 'a happy dog'.",
    }


def test_conversational_prompt_completion_becomes_one_conversation(samples):
    table = load_sft(samples / "sft_prompt_completion_chat.jsonl")
    first = json.loads((samples / "sft_prompt_completion_chat.jsonl").read_text().splitlines()[0])
    assert table.rows[0] == {"messages": first["prompt"] + first["completion"]}
    assert [m["role"] for m in table.rows[0]["messages"]] == ["user", "assistant"]


def test_alpaca_joins_instruction_and_input(samples):
    raw = json.loads((samples / "sft_alpaca.json").read_text())
    table = load_sft(samples / "sft_alpaca.json")
    assert len(table) == len(raw) == 15
    with_input = next(i for i, r in enumerate(raw) if r.get("input"))
    without_input = next(i for i, r in enumerate(raw) if not r.get("input"))
    assert table.rows[with_input]["messages"] == [
        {"role": "user", "content": f"{raw[with_input]['instruction']}\n\n{raw[with_input]['input']}"},
        {"role": "assistant", "content": raw[with_input]["output"]},
    ]
    assert table.rows[without_input]["messages"][0] == {"role": "user", "content": raw[without_input]["instruction"]}
    assert table.places[with_input] == f"item {with_input + 1}"


def test_sharegpt_roles_map_to_chat_roles(samples):
    table = load_sft(samples / "sft_sharegpt.jsonl")
    raw = json.loads((samples / "sft_sharegpt.jsonl").read_text().splitlines()[0])
    roles = {"system": "system", "human": "user", "gpt": "assistant"}
    assert table.rows[0]["messages"] == [{"role": roles[t["from"]], "content": t["value"]} for t in raw["conversations"]]


def test_every_file_kind_reads_the_same_rows(tmp_path, samples):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    raw = [json.loads(line) for line in (samples / "sft_messages.jsonl").read_text().splitlines()[:6]]
    expected = load_sft(samples / "sft_messages.jsonl").rows[:6]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in raw) + "\n\n")  # a trailing blank line is fine
    (tmp_path / "rows.json").write_text(json.dumps(raw))
    (tmp_path / "wrapped.json").write_text(json.dumps({"train": raw}))
    pq.write_table(pa.Table.from_pylist(raw), tmp_path / "rows.parquet")
    Dataset.from_list(raw).save_to_disk(str(tmp_path / "dataset"))
    DatasetDict({"train": Dataset.from_list(raw)}).save_to_disk(str(tmp_path / "dataset_dict"))
    for name in ("rows.jsonl", "rows.json", "wrapped.json", "rows.parquet", "dataset", "dataset_dict"):
        assert load_sft(tmp_path / name).rows == expected, name
    assert load_sft(tmp_path / "rows.parquet").places[2] == "row 3"


# ---------------------------------------------------------------------------------------------
# Bad input: one error naming the file, the place, the field, and the formats
# ---------------------------------------------------------------------------------------------

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def _line(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


BAD_ROWS = {
    "unreadable line": ('{"messages": [', "line 2", "not valid JSON"),
    "not an object": ("[1, 2]", "line 2", "must be a JSON object"),
    "missing field": ({"prompt": "Hi"}, "line 2", "missing field 'completion'"),
    "alpaca without output": ({"instruction": "Say hi"}, "line 2", "missing field 'output'"),
    "unknown role": ({"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Yo"}]},
                     "line 2", "field 'messages[1].role' is 'bot', an unknown role"),
    "empty assistant turn": ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]},
                             "line 2", "field 'messages[1].content' is empty"),
    "message without content": ({"messages": [{"role": "user"}]}, "line 2", "field 'messages[0]' must be an object with 'role' and 'content'"),
    "no assistant turn": ({"messages": [{"role": "user", "content": "Hi"}]}, "line 2", "no assistant turn"),
    "sharegpt unknown speaker": ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "bot", "value": "Yo"}]},
                                 "line 2", "field 'conversations[1].from' is 'bot'"),
    "sharegpt empty answer": ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": ""}]},
                              "line 2", "field 'conversations[1].value' is empty"),
    "content not text": ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": 3}]},
                         "line 2", "field 'messages[1].content' must be a string"),
    "no known fields": ({"question": "Hi", "answer": "Yo"}, "line 2", "no recognised fields"),
    "mixed kinds": ({"prompt": "Hi", "completion": "Hello"}, "line 2", "mixes plain-text prompt/completion and conversational rows"),
}


@pytest.mark.parametrize("case", BAD_ROWS, ids=list(BAD_ROWS))
def test_bad_row_names_file_line_and_field(tmp_path, case):
    row, where, fragment = BAD_ROWS[case]
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + _line(row) + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(DataError) as err:
        load_sft(path)
    message = str(err.value)
    assert message.startswith(f"{path}, {where}: "), message
    assert fragment in message
    assert SFT_FORMATS in message  # the error teaches the accepted formats


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("empty.jsonl", "", "the dataset is empty"),
        ("blank.jsonl", "\n\n", "the dataset is empty"),
        ("empty.json", "[]", "the dataset is empty"),
        ("zero.json", "", "the dataset is empty"),
        ("object.json", '{"a": 1, "b": 2}', "must hold an array of objects"),
        ("rows.csv", "a,b\n", "unsupported file type '.csv'"),
    ],
)
def test_bad_files(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as err:
        load_sft(path)
    assert str(err.value).startswith(str(path)) and fragment in str(err.value)


def test_missing_file_and_foreign_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_sft(tmp_path / "nope.jsonl")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="not a saved `datasets` dataset"):
        load_sft(tmp_path / "folder")


def test_json_array_error_names_the_item(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}]))
    with pytest.raises(DataError, match=r"item 2: field 'output' is empty"):
        load_sft(path)


# ---------------------------------------------------------------------------------------------
# Tokenisation and the loss mask
# ---------------------------------------------------------------------------------------------


def _trained_spans(tokenizer, row) -> list[tuple[bool, str]]:
    """Decode runs of tokens that do (True) or do not (False) carry a label."""
    spans: list[tuple[bool, list[int]]] = []
    for token, label in zip(row["input_ids"], row["labels"]):
        trained = label != -100
        if not spans or spans[-1][0] != trained:
            spans.append((trained, []))
        spans[-1][1].append(token)
    return [(trained, tokenizer.decode(ids)) for trained, ids in spans]


def test_assistant_only_mask_on_a_hand_checked_conversation(tokenizer):
    conversation = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Italy?"},
        {"role": "assistant", "content": "Rome."},
    ]}
    row = tokenise_sft([conversation], tokenizer, max_length=512).rows[0]
    # ChatML: each turn is <|im_start|>role\ncontent<|im_end|>\n. Only the two answers and the <|im_end|> that
    # closes each are learned; the role headers, the prompt turns and the newline glue are not.
    assert _trained_spans(tokenizer, row) == [
        (False, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"),
        (True, "Paris.<|im_end|>"),
        (False, "\n<|im_start|>user\nAnd Italy?<|im_end|>\n<|im_start|>assistant\n"),
        (True, "Rome.<|im_end|>"),
        (False, "\n"),
    ]
    # the pieces add up to exactly the template's rendering
    assert tokenizer.decode(row["input_ids"]) == tokenizer.apply_chat_template(conversation["messages"], tokenize=False)
    assert row["labels"] == [t if l != -100 else -100 for t, l in zip(row["input_ids"], row["labels"])]


def test_loss_on_all_labels_every_token(tokenizer):
    conversation = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    row = tokenise_sft([conversation], tokenizer, max_length=512, loss_on="all").rows[0]
    assert row["labels"] == row["input_ids"]


def test_plain_completion_is_learned_with_eos(tokenizer):
    row = tokenise_sft([{"prompt": "2+2=", "completion": " 4"}], tokenizer, max_length=512).rows[0]
    assert _trained_spans(tokenizer, row) == [(False, "2+2="), (True, " 4" + tokenizer.eos_token)]


def test_over_length_rows_are_cut_and_counted(tokenizer):
    short = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    long_answer = {"messages": [{"role": "user", "content": "Count."}, {"role": "assistant", "content": "one two " * 60}]}
    long_prompt = {"messages": [{"role": "user", "content": "word " * 120}, {"role": "assistant", "content": "Done."}]}
    # the template's default system turn makes the short row about 40 tokens
    out = tokenise_sft([short, long_answer, long_prompt], tokenizer, max_length=64)
    assert out.truncated == 2  # both long rows were cut ...
    assert out.dropped == 1  # ... and the long prompt kept no answer token, so it is left out
    assert len(out.rows) == 2 and all(len(r["input_ids"]) <= 64 for r in out.rows)


def test_holdout_split_is_seeded_and_disjoint():
    items = list(range(20))
    train, held = split_holdout(items, 0.25, seed=3)
    assert len(held) == 5 and sorted(train + held) == items
    assert split_holdout(items, 0.25, seed=3) == (train, held)
    assert split_holdout(items, 0.0, seed=3) == (items, [])
    with pytest.raises(ValueError, match="eval_split"):
        split_holdout([1], 0.5, seed=0)
