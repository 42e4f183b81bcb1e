"""What a run's output folder holds while a stage writes it, and whether the run finished.

A finished run has ``posttrain.json``, which it writes last. A folder without it that holds checkpoints, the
``.writing`` scratch folder, a lock or a run config is a run that was killed, failed, or is still going: every
command that takes a checkpoint refuses it (through models.py's ``is_adapter_folder``, ``read_metadata`` and
``resolve_model``). The lock itself is taken by stages/common.py's ``output_lock``.
"""

from __future__ import annotations

import json
from pathlib import Path

METADATA_FILE = "posttrain.json"  # written last by a finished run: its presence is what "finished" means
CHECKPOINTS = "checkpoints"  # resumable states, under a run's output folder
SCRATCH = ".writing"  # a run's final files are written here, then moved into the output folder
LOCK_FILE = "posttrain.lock"  # the process writing a run folder (see stages/common.py: output_lock)
RUN_FILES = (CHECKPOINTS, SCRATCH, LOCK_FILE, "posttrain_config.yaml")  # any of these without posttrain.json: unfinished


def check_finished(path: str | Path) -> None:
    """Refuse a posttrain run folder whose run did not finish, saying how to resume it.

    This is the one check behind every command that takes a checkpoint (chat, merge, score, eval, ``--model``,
    a pipeline's next stage): a finished run has posttrain.json, written last (after a kill during the final
    move the rest of the files still sit in .writing). A folder without posttrain.json that holds checkpoints,
    .writing, a lock or a run config is a run that was killed, failed, or is still going. Folders posttrain did
    not write (a merged model, a peft adapter, a hub snapshot) pass.
    """
    from posttrain.models import ModelError  # models.py imports this module: the error is read when raised

    folder = Path(path).expanduser()
    if not folder.is_dir() or (folder / METADATA_FILE).is_file():
        return
    if not any((folder / name).exists() for name in RUN_FILES):
        return
    holder = read_lock(folder)
    if lock_held(folder):
        raise ModelError(f"{folder} is still being written by a posttrain run (process {(holder or {}).get('pid', '?')}"
                         f"{': ' + holder['command'] if holder and holder.get('command') else ''}); wait for it to finish.")
    command = (holder or {}).get("command", "")
    again = command if " --resume" in command or command.startswith("posttrain pipeline") else command + " --resume"
    how = f"`{again}`" if command else "the command that started it again with --resume"
    raise ModelError(f"{folder} is a run that did not finish (it was stopped before writing {METADATA_FILE}, which a "
                     f"finished run writes last), so it is not a usable model. Resume it: run {how}; it continues from "
                     f"the newest complete checkpoint in {folder / CHECKPOINTS}.")


def read_lock(folder: str | Path) -> dict | None:
    """The lock record of a run folder ({"pid", "started", "host", "command"}), or None when there is none."""
    try:
        record = json.loads((Path(folder) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else {}


def lock_held(folder: str | Path) -> bool:
    """Whether a running process holds the lock of a run folder (its ``flock``, which the kernel drops when the
    holder dies; taking it is stages/common.py's ``output_lock``)."""
    import fcntl

    try:
        with open(Path(folder) / LOCK_FILE) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    except OSError:
        return False
    return False


