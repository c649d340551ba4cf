"""Where an edit comes from, as its model card and its exports say it: the base model (the embedded
one, a hub id or a local directory) with its licence where erasekit can tell it offline, and strings
of the edit as inert Markdown text."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from erasekit.models.embedded import EMBEDDED_DIR, EMBEDDED_FLUX_DIR
from erasekit.models.loading import EMBEDDED_FLUX_NAME, EMBEDDED_NAME

README = "README.md"
EMBEDDED_LICENSE = "apache-2.0"  # erasekit-tiny is trained by erasekit and shipped under erasekit's license
# licenses of the base models people erase from (hub license ids), lower-case hub id → license
BASE_LICENSES = {
    **dict.fromkeys(
        [f"compvis/stable-diffusion-v1-{i}" for i in range(1, 5)]
        + [
            "runwayml/stable-diffusion-v1-5",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "benjamin-paine/stable-diffusion-v1-5",
        ],
        "creativeml-openrail-m",
    ),
    **dict.fromkeys(
        [f"stabilityai/stable-diffusion-2{v}{b}" for v in ("", "-1") for b in ("", "-base")]
        + ["stabilityai/stable-diffusion-xl-base-1.0", "stabilityai/stable-diffusion-xl-refiner-1.0"],
        "openrail++",
    ),
}

# --- Markdown that a string of the edit cannot break out of --------------------------------------------

# Markdown's inline syntax: emphasis, code spans, links and images (``[``), table cells, escapes, and
# ``_`` only where it can open or close emphasis (Acc_e stays as it is). ``-``, ``.`` and ``#`` start a
# block only at the start of a line, which a cell or a sentence never is (``#`` is escaped anyway).
_MD_SPECIAL = re.compile(r"[\\`*\[\]|~#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md(value: object) -> str:
    """``value`` as inline Markdown text that renders as itself: one line (so no heading, list or new
    table row), ``<>&`` as HTML entities (no tag, no entity of the user's), and link, emphasis, code
    and cell syntax backslash-escaped (so ``[x](javascript:…)`` is text, not a link)."""
    text = " ".join(str(value).split())  # newlines, tabs, runs of spaces → one space
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), html.escape(text, quote=False))


def is_embedded(model: str | None) -> bool:
    """Whether a card's ``model`` is an embedded model: ``None`` (the Python API's default), its name or its directory."""
    if model is None or model in (EMBEDDED_NAME, EMBEDDED_FLUX_NAME):
        return True
    try:
        return Path(model).resolve() in (Path(EMBEDDED_DIR).resolve(), Path(EMBEDDED_FLUX_DIR).resolve())
    except (OSError, ValueError):  # a name no file system can hold (a NUL in card.json) is no path of ours
        return False


def _is_path(model: str, file: str = "") -> bool:
    """Whether ``model`` (or ``file`` in it) exists here, false for a name no file system can hold."""
    try:
        return (Path(model) / file).exists() if file else Path(model).exists()
    except (OSError, ValueError):
        return False


def hub_id(model: str | None) -> str | None:
    """``model`` if it is a hub repository id (``owner/name``, not a local path), else None."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if model is None or is_embedded(model) or model.count("/") != 1 or _is_path(model):
        return None
    try:
        validate_repo_id(model)  # the hub's own rule: no spaces, newlines or other characters a header or URL would carry
    except HFValidationError:
        return None
    return model


@dataclass
class Base:
    """What a card and an export say about the base model."""

    name: str  # the model the CLI names: erasekit-tiny, the hub id, or a local path's last part
    hub_id: str | None  # for the card's base_model and a link
    license: str | None  # a hub license id, or None where unknown
    embedded: bool


def base_model(model: str | None) -> Base:
    """The base model a card's ``model`` names, with its license where erasekit can tell it offline: the
    embedded model's own, a well-known hub model's, or the ``license`` of a local directory's README.md."""
    if is_embedded(model):
        flux = model is not None and (model == EMBEDDED_FLUX_NAME or Path(model).name == Path(EMBEDDED_FLUX_DIR).name)
        return Base(EMBEDDED_FLUX_NAME if flux else EMBEDDED_NAME, None, EMBEDDED_LICENSE, True)
    assert model is not None
    repo = hub_id(model)
    license_ = BASE_LICENSES.get(repo.lower()) if repo else None
    if license_ is None and repo is None and _is_path(model, README):
        from huggingface_hub import metadata_load

        try:
            found = (metadata_load(Path(model) / README) or {}).get("license")
        except Exception:  # a README that is not a hub card: its license is unknown, as without one
            found = None
        license_ = found if isinstance(found, str) and found else None
    name = repo or Path(model).name or model  # a local path's last part: the card is public, the path is the user's
    return Base(name, repo, license_, False)
