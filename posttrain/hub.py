"""Publishing a finished run to the Hugging Face Hub (``posttrain push DIR REPO``, ``--push_to_hub REPO``) through
huggingface_hub, and the checks that say before a run trains that the hub will not take it."""

from __future__ import annotations

import re
from pathlib import Path

from posttrain.config import ConfigError
from posttrain.run_folder import CHECKPOINTS, LOCK_FILE, SCRATCH, check_finished

# what stays home: resumable states, the scratch folder and the lock are this machine's, not the model's
NOT_UPLOADED = [f"{CHECKPOINTS}/*", f"{SCRATCH}/*", LOCK_FILE, "best/*"]
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as a hub repository id (``org/name``) rather than a local path that exists."""
    return bool(_REPO_ID.fullmatch(name)) and not Path(name).expanduser().exists()


def _offline_help(what: str) -> str:
    return (f"{what}: the Hugging Face Hub is unreachable from here (HF_HUB_OFFLINE is set or there is no network). "
            "Run `posttrain push OUTPUT REPO` later from a machine that reaches the hub; the finished folder has "
            "everything it uploads.")


def check_push(repo: str, what: str = "--push_to_hub") -> None:
    """Before a stage trains: ``repo`` is a repo id, the hub is not switched off, and a token is there."""
    from huggingface_hub import constants, get_token

    if not _REPO_ID.fullmatch(repo):
        raise ConfigError(f"{what} {repo!r}: give a hub repo id, org/name (or your-user/name).")
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(_offline_help(f"{what} {repo}"))
    if get_token() is None:
        raise ConfigError(f"{what} {repo}: no Hugging Face token; run `hf auth login` or set HF_TOKEN (a token with "
                          "write access).")


def upload_files(folder: Path) -> list[str]:
    """The files of ``folder`` a push uploads (relative paths): all but NOT_UPLOADED."""
    from fnmatch import fnmatch

    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return [f for f in files if not any(fnmatch(f, pattern) for pattern in NOT_UPLOADED)]


def push(folder: str | Path, repo: str, private: bool = False) -> str:
    """Upload a finished run folder (model card, adapter or model, tokenizer, metrics, plots, tracker logs) to the
    hub repo ``repo``, creating it if needed; returns the repo's URL."""
    from httpx2 import TransportError  # the HTTP client of huggingface_hub 2.x: its network errors
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"posttrain push: {folder} is not a folder; give a finished run's output folder.")
    check_finished(folder)  # an unfinished run is not a model
    if not (folder / "README.md").is_file() and not (folder / "adapter_config.json").is_file() \
            and not (folder / "config.json").is_file():
        raise ConfigError(f"posttrain push: {folder} holds no model (no adapter_config.json or config.json).")
    check_push(repo, "posttrain push")
    api = HfApi()
    try:
        url = api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, ignore_patterns=NOT_UPLOADED,
                          commit_message=f"posttrain: upload {folder.name}")
    except (OfflineModeIsEnabled, ConnectionError, TransportError) as err:
        raise ConfigError(_offline_help(f"posttrain push {repo}") + f" ({type(err).__name__})") from None
    except LocalTokenNotFoundError:
        raise ConfigError(f"posttrain push {repo}: no Hugging Face token; run `hf auth login` or set HF_TOKEN.") from None
    except HfHubHTTPError as err:
        raise ConfigError(f"posttrain push {repo}: the hub refused the upload: {str(err).splitlines()[0]}") from None
    return str(url)
