"""Resumable cells: a long run writes each measured outcome to its own file as soon as it has it,
and a rerun reads those back instead of measuring them again.

Shared by the single-attack runner (:mod:`erasekit.eval.attack_run`) and the bench
(:mod:`erasekit.bench`): reading a cell back (a damaged one is measured again, with one warning
line) and announcing each cell still to measure on stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def counted(jobs: list[T], what: str, describe: Callable[[T], str], show: bool = True) -> Iterator[T]:
    """``jobs`` one by one, each announced on stderr as "``what`` k/n: …" (a bench's cells take
    minutes each; a rerun counts only what is left to do where the caller skips done cells)."""
    for k, job in enumerate(jobs, 1):
        if show:
            print(f"{what} {k}/{len(jobs)}: {describe(job)}", file=sys.stderr, flush=True)
        yield job


def read_cell(path: Path, keys: tuple[str, ...] = ()) -> dict | None:
    """A cell written by an earlier run, or None when there is none, or when it is damaged (cut short,
    not JSON, not an object, or without ``keys``): a damaged cell is measured again, with a warning line."""
    if not path.exists():
        return None
    try:
        cell = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        problem = f"unreadable ({type(err).__name__})"
    else:
        missing = [k for k in keys if k not in cell] if isinstance(cell, dict) else None
        if missing == []:
            return cell
        problem = "not a JSON object" if missing is None else f"without {', '.join(missing)}"
    warn_damaged(path, problem)
    return None


def warn_damaged(path: Path, problem: str) -> None:
    """The one warning line of a damaged cell that is measured again."""
    print(f"warning: {path} is damaged ({problem}); measuring that cell again", file=sys.stderr, flush=True)
