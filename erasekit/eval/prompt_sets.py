"""The papers' prompt files: I2P-style CSVs (the explicit protocol) and COCO-style caption CSVs (the
captions protocol); the protocols themselves are :mod:`erasekit.eval.protocols.explicit` and
:mod:`erasekit.eval.protocols.captions`.

Files are read whole before anything is generated: a missing column or a bad value is one line.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from erasekit.errors import ErasekitError
from erasekit.eval.prompts import MAX_SEED, PromptRow, check_total, unterminated_quote

I2P_SEED_COLUMNS = ("evaluation_seed", "sd_seed", "seed")  # ESD/MACE's I2P file, the I2P release, ours
CAPTION_COLUMNS = ("caption", "prompt", "text")
PROMPT_SET_SEED = 80_000  # rows without a seed: this + row index, later images a seed page further (PromptRow)


def _read_csv(path: str | Path, what: str) -> tuple[list[str], list[dict[str, str]]]:
    from erasekit.io import read_user_text

    text = read_user_text(path, f"{what} file")
    try:
        if (line := unterminated_quote(text)) is not None:  # else the rest of the file reads as one field
            raise ErasekitError(f"{path}, line {line}: a quote opens a field here and is never closed; close it")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
        columns = [c.strip() for c in reader.fieldnames or []]
    except csv.Error as err:
        raise ErasekitError(f"{path} is not a readable CSV: {err}") from err
    if not rows:
        raise ErasekitError(f"{path} has no rows")
    return columns, [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]


def _seed(row: dict[str, str], column: str | None, index: int, where: str) -> tuple[int, int]:
    """The row's seed and seed block: its own seed (consecutive images), else one from its index."""
    if column is None or not row.get(column):
        return PROMPT_SET_SEED + index, 1
    try:
        seed = int(float(row[column]))
    except (ValueError, OverflowError):
        raise ErasekitError(f"{where}: {column} must be an integer, not {row[column]!r}") from None
    if not 0 <= seed < MAX_SEED:
        raise ErasekitError(f"{where}: {column} {seed} is out of range; seeds run from 0 to {MAX_SEED - 1:,}")
    return seed, 0


def i2p_rows(path: str | Path, samples: int = 1) -> list[PromptRow]:
    """An I2P-style CSV: a ``prompt`` column (required), a seed (evaluation_seed / sd_seed / seed) and
    ``categories`` (optional, reported as the group)."""
    columns, rows = _read_csv(path, "I2P prompt")
    if "prompt" not in columns:
        raise ErasekitError(f"{path} has no 'prompt' column (columns: {', '.join(columns)}); an I2P file needs one")
    seed_column = next((c for c in I2P_SEED_COLUMNS if c in columns), None)
    out = []
    for i, row in enumerate(rows):
        where = f"{path}, row {i + 2}"
        if not row["prompt"]:
            raise ErasekitError(f"{where}: empty prompt")
        seed, block = _seed(row, seed_column, i, where)
        out.append(PromptRow(row["prompt"], seed, "erase", {}, samples, row.get("categories", ""), block))
    check_total(out, str(path))
    return out


def caption_rows(path: str | Path, samples: int = 1) -> list[PromptRow]:
    """A COCO-style caption CSV: a ``caption`` (or ``prompt``/``text``) column, an optional ``seed``."""
    columns, rows = _read_csv(path, "caption")
    column = next((c for c in CAPTION_COLUMNS if c in columns), None)
    if column is None:
        raise ErasekitError(f"{path} has no caption column ({' / '.join(CAPTION_COLUMNS)}); columns: {', '.join(columns)}")
    seed_column = "seed" if "seed" in columns else None
    out = []
    for i, row in enumerate(rows):
        where = f"{path}, row {i + 2}"
        if not row[column]:
            raise ErasekitError(f"{where}: empty caption")
        seed, block = _seed(row, seed_column, i, where)
        out.append(PromptRow(row[column], seed, "retain", {}, samples, seed_block=block))
    check_total(out, str(path))
    return out
