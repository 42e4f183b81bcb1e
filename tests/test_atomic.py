"""The one "write beside, then rename" helper: a failed write leaves the old version whole and no scratch behind."""

from __future__ import annotations

import pytest

from posttrain.atomic import atomic_folder, write_atomic


def test_a_folder_is_replaced_only_when_its_write_finishes(tmp_path):
    final = tmp_path / "merged"
    with atomic_folder(final) as scratch:
        (scratch / "model.safetensors").write_text("first")
    assert (final / "model.safetensors").read_text() == "first"

    with pytest.raises(RuntimeError), atomic_folder(final) as scratch:
        (scratch / "model.safetensors").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (final / "model.safetensors").read_text() == "first"  # the old folder, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no scratch folder left

    with atomic_folder(final) as scratch:
        (scratch / "config.json").write_text("{}")
    assert sorted(p.name for p in final.iterdir()) == ["config.json"]  # replaced, not merged into


def test_a_file_is_replaced_whole(tmp_path):
    path = tmp_path / "deep" / "lineage.json"
    write_atomic(path, "one")
    write_atomic(path, "two")
    assert path.read_text() == "two" and sorted(p.name for p in path.parent.iterdir()) == ["lineage.json"]
