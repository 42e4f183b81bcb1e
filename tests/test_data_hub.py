"""Datasets through datasets.load_dataset: a folder laid out as a hub dataset repo (what --data org/name reads once
downloaded), its splits and subsets, column mapping, the same row checks, the offline error, and plain-text SFT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.config import ConfigError
from posttrain.data import DataError, load_preferences, load_sft, tokenise_sft


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def qa(n: int, tag: str) -> list[dict]:
    return [{"question": f"{tag} question {i}?", "answer": f"{tag} answer {i}."} for i in range(n)]


@pytest.fixture()
def dataset_repo(tmp_path):
    """A hub dataset repo as a clone has it: data files per split, and two subsets declared in the README's YAML."""
    repo = tmp_path / "org-qa"
    write_jsonl(repo / "main" / "train.jsonl", qa(3, "main-train"))
    write_jsonl(repo / "main" / "test.jsonl", qa(2, "main-test"))
    write_jsonl(repo / "hard" / "train.jsonl", qa(4, "hard-train"))
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: main\n  default: true\n  data_files:\n  - split: train\n    path: main/train.jsonl\n"
        "  - split: test\n    path: main/test.jsonl\n- config_name: hard\n  data_files:\n  - split: train\n"
        "    path: hard/train.jsonl\n---\n")
    return repo


COLUMNS = {"prompt": "question", "completion": "answer"}


def test_splits_subsets_and_column_mapping(dataset_repo):
    train = load_sft(dataset_repo, columns=COLUMNS)  # the default subset, its train split
    assert [r["prompt"] for r in train.rows] == [f"main-train question {i}?" for i in range(3)]
    assert train.rows[0] == {"prompt": "main-train question 0?", "completion": "main-train answer 0."}
    assert train.places[0] == "split train, row 1"
    test = load_sft(dataset_repo, split="test", columns=COLUMNS)
    assert [r["completion"] for r in test.rows] == ["main-test answer 0.", "main-test answer 1."]
    hard = load_sft(dataset_repo, subset="hard", columns=COLUMNS)
    assert len(hard) == 4 and hard.rows[3]["prompt"] == "hard-train question 3?"

    with pytest.raises(ConfigError, match=r"has no split 'validation'; its splits are train, test \(--data_split\)"):
        load_sft(dataset_repo, split="validation", columns=COLUMNS)
    with pytest.raises(ConfigError, match=r"--data_subset"):
        load_sft(dataset_repo, subset="easy", columns=COLUMNS)
    with pytest.raises(DataError, match=r"--data_columns prompt=query: there is no column 'query'; the columns are answer, question"):
        load_sft(dataset_repo, columns={"prompt": "query", "completion": "answer"})


def test_hub_rows_get_the_same_checks_named_by_split_and_row(tmp_path):
    repo = tmp_path / "pairs"
    write_jsonl(repo / "train.jsonl", [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."},
                                       {"prompt": "Hi", "chosen": "Same.", "rejected": "Same."}])
    with pytest.raises(DataError) as err:
        load_preferences(repo)
    assert f"{repo}, split train, row 2: 'chosen' and 'rejected' are identical" in str(err.value)


def test_a_saved_datasets_folder_takes_the_split_too(tmp_path):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "saved"
    DatasetDict({"train": Dataset.from_list(qa(2, "a")), "validation": Dataset.from_list(qa(1, "b"))}).save_to_disk(folder)
    rows = load_sft(folder, split="validation", columns=COLUMNS).rows
    assert rows == [{"prompt": "b question 0?", "completion": "b answer 0."}]


def test_an_unreachable_hub_is_one_clear_error():
    # the test machine has no hub (HF_HUB_OFFLINE is set in conftest)
    with pytest.raises(DataError) as err:
        load_sft("no-such-org/no-such-dataset")
    message = str(err.value)
    assert message.startswith("no-such-org/no-such-dataset: could not load the dataset")
    assert "The Hugging Face Hub is unreachable from here" in message and "pass a local file" in message


def test_split_on_a_plain_file_is_refused(tmp_path):
    rows = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "completion": "c"}])
    with pytest.raises(ConfigError, match="--data_split and --data_subset choose within a hub dataset"):
        load_sft(rows, split="test")
    # column mapping works on files too
    renamed = write_jsonl(tmp_path / "b.jsonl", qa(1, "f"))
    assert load_sft(renamed, columns=COLUMNS).rows == [{"prompt": "f question 0?", "completion": "f answer 0."}]


def test_plain_text_rows_train_every_token(tmp_path, tokenizer):
    rows = write_jsonl(tmp_path / "text.jsonl", [{"text": "The cat sat on the mat."}, {"text": "Dogs bark."}])
    table = load_sft(rows)
    assert table.rows == [{"text": "The cat sat on the mat."}, {"text": "Dogs bark."}]
    tokenised = tokenise_sft(table.rows, tokenizer, max_length=64, loss_on="assistant")
    first = tokenised.rows[0]
    assert first["labels"] == first["input_ids"]  # no prompt: every token is a target, even with loss_on assistant
    assert first["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(first["input_ids"][:-1]) == "The cat sat on the mat."

    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"text": "x"}, {"messages": [{"role": "user", "content": "a"},
                                                                                {"role": "assistant", "content": "b"}]}])
    with pytest.raises(DataError, match="line 2: mixes conversational and plain text rows"):
        load_sft(mixed)


def test_sft_trains_on_a_dataset_repo_through_trl_names(tmp_path, tiny_model_dir):
    """The command line as a TRL user writes it: dataset_name, dataset_text_field (a column mapping), max_steps."""
    from posttrain.cli import main

    repo = tmp_path / "corpus"
    write_jsonl(repo / "train.jsonl", [{"body": f"Sentence number {i} of the corpus."} for i in range(6)])
    output = tmp_path / "out"
    code = main(["sft", "--model", str(tiny_model_dir), "--dataset_name", str(repo), "--dataset_text_field", "body",
                 "--output_dir", str(output), "--max_steps", "2", "--per_device_train_batch_size", "2",
                 "--report_to", "none", "--train.eval_split", "0"])
    assert code == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["final"]["rows"] == 6 and metrics["final"]["steps"] == 2
    assert [h for h in metrics["history"] if "loss" in h]


def test_a_conversation_the_chat_template_refuses_is_one_error_naming_the_row(tmp_path, tokenizer):
    import copy

    from posttrain.data import render_prompt

    strict = copy.deepcopy(tokenizer)  # a Gemma-like template: no system role
    strict.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                            "{% endif %}" + tokenizer.chat_template)
    rows = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
        {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Yo"}]}])
    table = load_sft(rows)
    with pytest.raises(DataError) as err:
        tokenise_sft(table.rows, strict, 64, "assistant", table.source, table.places)
    assert str(err.value).startswith(f"{rows}, line 2: the model's chat template refused this conversation: "
                                     "System role not supported.")
    with pytest.raises(DataError, match="the conversation starting 'Be terse.': the model's chat template refused"):
        render_prompt(strict, table.rows[1]["messages"][:2])


TOOL_ROWS = [{"messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                                                        "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "name": "get_weather", "content": "18C and sunny"},
    {"role": "assistant", "content": "It is 18C and sunny in Paris."}]}]
# ChatML that writes an assistant turn's tool calls as text
TOOL_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] }}"
    "{% for c in m.get('tool_calls', []) %}{{ 'call ' + c['function']['name'] + ' ' + (c['function']['arguments'] | tojson) }}"
    "{% endfor %}{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_tool_turns_train_the_call_not_the_result_where_the_template_renders_them(tmp_path, tokenizer):
    import copy

    table = load_sft(write_jsonl(tmp_path / "tools.jsonl", TOOL_ROWS))
    assert table.rows[0]["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"  # kept, not dropped
    tools = copy.deepcopy(tokenizer)
    tools.chat_template = TOOL_TEMPLATE
    row = tokenise_sft(table.rows, tools, 256, "assistant", table.source, table.places).rows[0]
    trained = tools.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != -100])
    assert 'call get_weather {"city": "Paris"}' in trained and "It is 18C and sunny in Paris." in trained
    assert "18C and sunny<" not in trained and "Weather in Paris?" not in trained  # the tool result and the user: context

    # the default model's template has no place for tool calls: refused, not trained without them
    with pytest.raises(DataError) as err:
        tokenise_sft(table.rows, tokenizer, 256, "assistant", table.source, table.places)
    assert f"{table.source}, line 1: the model's chat template refused this conversation: it leaves out the tool call " \
           "'get_weather'" in str(err.value)


def test_tool_calls_off_an_assistant_turn_are_refused(tmp_path):
    bad = [{"messages": [{"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f"}}]},
                         {"role": "assistant", "content": "y"}]}]
    with pytest.raises(DataError, match=r"line 1: field 'messages\[0\].tool_calls' must be on an assistant turn"):
        load_sft(write_jsonl(tmp_path / "bad.jsonl", bad))


def test_data_columns_from_the_command_line_and_yaml(tmp_path):
    from posttrain.config import SFTConfig, load_config

    assert load_config(SFTConfig, None, {"data_columns": "prompt=question, completion=answer"}).data_columns == COLUMNS
    config_file = tmp_path / "sft.yaml"
    config_file.write_text("data_columns:\n  prompt: question\n  completion: answer\n")
    assert load_config(SFTConfig, config_file).data_columns == COLUMNS
    with pytest.raises(ConfigError, match=r"^--data_columns: .*expected name=value pairs \(a=b,c=d\)"):
        load_config(SFTConfig, None, {"data_columns": "question"})


def test_rl_prompts_from_a_dataset_repo_take_its_split_subset_and_columns(dataset_repo, tmp_path):
    """`posttrain rlhf --prompts org/name --data_split ... --data_columns prompt=question` reads the same way as the
    training stages: the held-out split of the same dataset through --eval_split, and the row's other columns kept
    for the reward functions."""
    from posttrain.config import RLHFConfig, load_config
    from posttrain.stages.rlhf import held_out_prompts
    from posttrain.data import load_prompts

    config = load_config(RLHFConfig, None, {
        "prompts": str(dataset_repo), "eval_prompts": str(dataset_repo), "output": str(tmp_path / "rl"),
        "reward_fn": "posttrain.rewards:answer_format", "dataset_test_split": "test",  # TRL's name for eval_split
        "data_columns": {"prompt": "question"}})
    table = load_prompts(config.prompts, config.data_split, config.data_subset, config.data_columns)
    assert [r["prompt"] for r in table.rows] == [f"main-train question {i}?" for i in range(3)]
    assert table.rows[0]["answer"] == "main-train answer 0."
    _, heldout = held_out_prompts(config, table.rows)
    assert [r["prompt"] for r in heldout.rows] == ["main-test question 0?", "main-test question 1?"]
    hard = load_prompts(config.prompts, "", "hard", config.data_columns)
    assert len(hard.rows) == 4
