"""Writes that a kill cannot leave half done: write under a scratch name beside the target, then rename it into
place (``os.replace`` is atomic within a filesystem), so a reader sees the old version or the new, never a part."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path``; a kill mid-write leaves the previous file (and a hidden ``.NAME.tmp``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """A scratch folder beside ``final`` to write into; when the block ends without an error it replaces ``final``
    (an existing one is removed first), and either way the scratch folder is gone."""
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield scratch
        if final.exists():
            shutil.rmtree(final)
        os.replace(scratch, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
