"""Datasets read through ``datasets.load_dataset``: a hub id (``--data org/name``, with ``--data_split`` and
``--data_subset``) or a local folder of data files laid out as a hub dataset repo (a clone of one). Their rows go
through the same checks as a file's, each named by its split and row number; ``--data_columns`` renames columns
that carry another name (``prompt=question,completion=answer``), for files too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posttrain.config import ConfigError


def data_options(config: Any) -> dict[str, Any]:
    """The hub-dataset settings of a stage config, as keyword arguments of data.load_sft / load_preferences."""
    return {"split": config.data_split, "subset": config.data_subset, "columns": config.data_columns}


def is_saved_dataset(folder: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read with load_from_disk)."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def pick_split(dataset: Any, split: str, source: str) -> tuple[Any, str]:
    """One split of a DatasetDict: ``split``, else 'train', else the only one; an error names the splits there are."""
    if not hasattr(dataset, "keys"):
        return dataset, split
    names = list(dataset.keys())
    if split:
        if split not in dataset:
            raise ConfigError(f"{source}: has no split '{split}'; its splits are {', '.join(names)} (--data_split).")
        return dataset[split], split
    if "train" in dataset:
        return dataset["train"], "train"
    if len(names) == 1:
        return dataset[names[0]], names[0]
    raise ConfigError(f"{source}: has the splits {', '.join(names)}; choose one with --data_split.")


def load_dataset_rows(name: str, split: str, subset: str, formats: str) -> list:
    """The rows of one split of a hub dataset or a folder of data files, each placed as "split train, row 7"."""
    import datasets

    from posttrain.data import DataError, Row

    folder = Path(name).exists()
    try:
        dataset = datasets.load_dataset(name, subset or None)
    except ValueError as err:
        if subset:  # an unknown subset: datasets names the ones there are
            raise ConfigError(f"{name}: {str(err).splitlines()[0]} (--data_subset).") from None
        raise DataError(name, None, f"could not load the dataset ({str(err).splitlines()[0]}).", formats) from None
    except (ConnectionError, datasets.exceptions.DatasetNotFoundError) as err:
        hub = "" if folder else (
            " The Hugging Face Hub is unreachable from here or has no such dataset (HF_HUB_OFFLINE set, no network, "
            "or a typo); pass a local file instead (.jsonl, .json, .parquet, or a folder from save_to_disk).")
        raise DataError(name, None, f"could not load the dataset ({str(err).splitlines()[0]}).{hub}", formats) from None
    except Exception as err:  # noqa: BLE001 - datasets' own errors for files it cannot read have no common base
        what = ("is a folder but not a saved `datasets` dataset, nor data files that datasets.load_dataset reads"
                if folder else "could not load the dataset")
        raise DataError(name, None, f"{what} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}).",
                        formats) from None
    dataset, chosen = pick_split(dataset, split, f"{name}{f' ({subset})' if subset else ''}")
    return [Row(dict(r), f"{f'split {chosen}, ' if chosen else ''}row {i + 1}") for i, r in enumerate(dataset)]


def map_columns(rows: list, columns: dict[str, str], source: str, formats: str) -> list:
    """Rows with each column ``columns[name]`` renamed ``name`` (posttrain's name for it)."""
    if not columns:
        return rows
    from posttrain.data import DataError, Row

    present = sorted(rows[0].data) if rows else []
    for name, column in columns.items():
        if rows and column not in rows[0].data:
            raise DataError(source, rows[0].where, f"--data_columns {name}={column}: there is no column '{column}'; the "
                                                   f"columns are {', '.join(present)}.", formats)
    renamed = []
    for row in rows:
        data = {k: v for k, v in row.data.items() if k not in columns.values()}
        for name, column in columns.items():
            if column not in row.data:
                raise DataError(source, row.where, f"--data_columns {name}={column}: this row has no column '{column}'.", formats)
            data[name] = row.data[column]
        renamed.append(Row(data, row.where))
    return renamed
