"""The model repository layout: ``<root>/<name>/<version>/`` as TF Serving reads it."""

from __future__ import annotations

import re
from pathlib import Path

CARD_RELATIVE_PATH = Path("assets.extra") / "model_card.json"
SAVED_MODEL_FILE = "saved_model.pb"
TEMPORARY_PREFIX = ".tmp-"

# Names become path components and URL segments: no dots, so never "." or "..".
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_VERSION_PATTERN = re.compile(r"^[1-9][0-9]{0,17}$")


def is_valid_model_name(name: str) -> bool:
    """True when ``name`` may name a model folder (letters, digits, '_' and '-')."""
    return bool(_NAME_PATTERN.match(name))


def validate_model_name(name: str) -> str:
    """Return ``name`` or raise ValueError saying which names are allowed."""
    if not is_valid_model_name(name):
        raise ValueError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_version(text: str) -> int | None:
    """The version a folder name stands for, or None when it is not a positive integer."""
    return int(text) if _VERSION_PATTERN.match(text) else None


def list_models(root: Path) -> list[str]:
    """Names of the model folders under ``root``, sorted; hidden and invalid names are skipped."""
    if not root.is_dir():
        return []
    return sorted(
        entry.name for entry in root.iterdir() if entry.is_dir() and is_valid_model_name(entry.name)
    )


def list_versions(model_dir: Path) -> list[int]:
    """Complete versions in ``model_dir``, ascending.

    Temporary export folders never count: an export only becomes a version by an atomic rename.
    """
    if not model_dir.is_dir():
        return []
    versions = []
    for entry in model_dir.iterdir():
        version = parse_version(entry.name)
        if version is not None and entry.is_dir():
            versions.append(version)
    return sorted(versions)


def next_version(model_dir: Path) -> int:
    """The version number a new export into ``model_dir`` gets."""
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def version_dir(root: Path, name: str, version: int) -> Path:
    """The folder of one version, checked to stay inside ``root``."""
    validate_model_name(name)
    if version < 1:
        raise ValueError(f"invalid version {version}: versions are positive integers")
    return root / name / str(version)


def card_path(version_path: Path) -> Path:
    """Where the model card of a version lives."""
    return version_path / CARD_RELATIVE_PATH
