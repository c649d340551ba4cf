"""The ``push`` job: the edit's model card, and the edit uploaded to the Hugging Face hub.

:mod:`erasekit.hub` loads torch, so it is imported inside the function that uses it: the command
line answers ``--help`` and a bad flag without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erasekit.errors import ErasekitError


@dataclass(frozen=True)
class PushOptions:
    """What ``erasekit push`` is asked: the edit directory, the hub repository (``OWNER/NAME``), whether
    it is created private, whether only the card is written (no upload), the base model for the kohya
    LoRA uploaded with the edit, and whether a README.md that erasekit did not write is replaced."""

    edit_dir: Path
    repo_id: str | None = None
    private: bool = False
    card_only: bool = False
    model: str | None = None
    overwrite: bool = False


@dataclass(frozen=True)
class PushResult:
    """What was done: the model card written (``card_only``), or the URL of the repository pushed to."""

    card: Path | None = None
    url: str | None = None


def push(options: PushOptions) -> PushResult:
    """Write the edit's model card into its directory, or upload the edit, the card and a kohya LoRA."""
    from erasekit.hub import push as push_edit
    from erasekit.hub import write_card

    if options.card_only:
        return PushResult(card=write_card(options.edit_dir, overwrite=options.overwrite))
    if not options.repo_id:
        raise ErasekitError("push needs --repo-id OWNER/NAME (or --card-only to write the card without uploading)")
    return PushResult(url=push_edit(options.edit_dir, options.repo_id, options.private, options.model, options.overwrite))
