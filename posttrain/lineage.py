"""Content hashes of stage inputs and the lineage manifest (``<output>/lineage.json``): what ran on what,
and whether a stage is up to date."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from posttrain.atomic import write_atomic
from posttrain.config import to_dict
from posttrain.pipeline_spec import KINDS, Stage

MANIFEST = "lineage.json"


# ---------------------------------------------------------------------------------------------
# Content hashes and the lineage manifest
# ---------------------------------------------------------------------------------------------

SKIP_IN_HASH = {"checkpoints", ".writing", "__pycache__", "logs"}  # logs: tracker event files (--report_to), not the model
_hash_cache: dict[tuple, str] = {}


def hash_path(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a folder's relative file names and contents (checkpoints left out)."""
    path = Path(path)
    if path.is_file():
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _hash_cache:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            _hash_cache[key] = digest.hexdigest()
        return _hash_cache[key]
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_IN_HASH)
        for name in sorted(files):
            file = Path(root, name)
            digest.update(f"{file.relative_to(path).as_posix()}\0{hash_path(file)}\0".encode())
    return digest.hexdigest()


def stage_inputs(stage: Stage, manifest: dict) -> dict[str, dict] | None:
    """Each input with its hash; None when an upstream stage has no finished output recorded yet."""
    inputs = {}
    for key in KINDS[stage.kind].inputs:
        value = getattr(stage.config, key)
        if not value:
            continue
        if key in stage.upstream:
            hashes = {}
            for ref in stage.upstream[key]:
                entry = manifest["stages"].get(ref, {})
                if entry.get("status") != "done" or not entry.get("output_hash"):
                    return None
                hashes[ref] = entry["output_hash"]
            inputs[key] = {"path": value, "from": stage.templates[key], "hash": digest(hashes)}
        elif Path(value).expanduser().exists():
            inputs[key] = {"path": value, "hash": hash_path(Path(value).expanduser())}
        else:
            inputs[key] = {"name": value}  # the embedded model or a hub id: its name is its identity
    return inputs


def stage_key(stage: Stage, inputs: dict[str, dict]) -> str:
    """Hash of the resolved config with every input replaced by its content hash (output and resume left out)."""
    config = to_dict(stage.config)
    for key in ("output", "resume"):
        config.pop(key, None)
    for key, record in inputs.items():
        config[key] = record.get("hash", record.get("name"))
    return digest({"kind": stage.kind, "config": config})


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def read_manifest(output: Path) -> dict:
    path = output / MANIFEST
    if path.is_file():
        return json.loads(path.read_text())
    return {"stages": {}}


def write_manifest(output: Path, manifest: dict) -> None:
    """Write lineage.json atomically: a kill mid-write leaves the previous manifest."""
    write_atomic(output / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
