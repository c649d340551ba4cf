"""Prompt files: what to generate, with which seeds, and what the images should show.

A prompt file is a CSV with a header. Columns:

``prompt``     the text (required, non-empty)
``seed``       an integer; row images use seeds ``seed, seed+1, ...`` (required)
``seed_block`` optional: with ``b`` here, image ``k`` uses ``seed + (k // b)·2⁴⁰ + k % b``, so a row's
               first images keep their seeds whatever its ``samples`` and rows ``b`` seeds apart
               never share one (the protocols' rows use it)
``role``       one of ``erase``, ``retain``, ``synonym``, ``associated``, ``implicit`` (required)
``shape``, ``artist``, ``character``, ``flames``
               the labels the evaluator should read; empty means "not judged". ``none`` is allowed for
               shape, artist and character; flames is ``yes`` or ``no``.
``samples``    images for this row (optional, default 1)
``group``      a name to report this row under (optional, default the prompt)
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from erasekit.errors import ErasekitError
from erasekit.world.evaluator import HEADS

ROLES = ("erase", "retain", "synonym", "associated", "implicit")
LABEL_COLUMNS = ("shape", "artist", "character", "flames")
PROMPT_DIR = Path(__file__).resolve().parent.parent / "prompts"


MAX_SEED = 2**62  # a row's images take seed, seed + 1, ...: they must stay in torch's 64-bit range
MAX_SAMPLES = 10_000  # per row; more is a mistake (10,000 images of one prompt), split it over rows
SEED_PAGE = 2**40  # a seed block's later pages lie this far apart (below MAX_SEED + MAX_SAMPLES pages)
MAX_IMAGES = 100_000  # per file: the protocols ask for a few thousand; 1,000 rows × 10,000 samples was ~1,800 h
_WHOLE = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit also takes '²', which int() refuses


@dataclass(frozen=True)
class PromptRow:
    """One row of a prompt file: what to generate and what the images should show.

    ``prompt`` is the text, ``seed`` the first image's seed (:meth:`image_seed`; a ``seed_block`` above 0
    spaces the seeds in blocks), ``role`` one of :data:`ROLES`, ``expected`` the label each judged head
    should read (head → label), ``samples`` the number of images and ``group`` the name the row is
    reported under (empty: the prompt).
    """

    prompt: str
    seed: int
    role: str
    expected: dict[str, str] = field(default_factory=dict)  # head → label
    samples: int = 1
    group: str = ""
    seed_block: int = 0  # 0: consecutive seeds

    @property
    def name(self) -> str:
        """The name the row is reported under: its group, else its prompt."""
        return self.group or self.prompt

    def image_seed(self, k: int) -> int:
        """The seed of this row's ``k``-th image; it never depends on ``samples``."""
        if not self.seed_block:
            return self.seed + k
        page, offset = divmod(k, self.seed_block)
        return self.seed + page * SEED_PAGE + offset


_FLAME_WORDS = {"yes": "yes", "true": "yes", "1": "yes", "no": "no", "false": "no", "0": "no"}


def _label(column: str, value: str, where: str) -> str:
    if column == "flames":
        if value.lower() not in _FLAME_WORDS:
            raise ErasekitError(f"{where}: flames must be yes or no, not {value!r}")
        return _FLAME_WORDS[value.lower()]
    labels = HEADS[column]
    if value not in labels:
        near = [x for x in labels if x.lower() == value.lower()]
        hint = (
            f" (did you mean {near[0]!r}?)" if near else f"; known: {', '.join(labels[:12])}{' ...' if len(labels) > 12 else ''}"
        )
        raise ErasekitError(f"{where}: unknown {column} {value!r}{hint}")
    return value


def parse_rows(records: list[dict[str, str]], source: str = "prompt file") -> list[PromptRow]:
    """Validate CSV records into rows; every error names the line and the mend."""
    rows = []
    for line, rec in enumerate(records, start=2):  # line 1 is the header
        where = f"{source}, line {line}"
        prompt = (rec.get("prompt") or "").strip()
        if not prompt:
            raise ErasekitError(f"{where}: empty prompt; write the text to generate in the prompt column")
        seed_text = (rec.get("seed") or "").strip()
        try:
            seed = int(seed_text)
        except ValueError:
            raise ErasekitError(f"{where}: seed {seed_text!r} is not an integer; use a whole number such as 0") from None
        if not 0 <= seed < MAX_SEED:
            raise ErasekitError(f"{where}: seed {seed} is out of range; seeds run from 0 to {MAX_SEED - 1:,}")
        role = (rec.get("role") or "").strip()
        if role not in ROLES:
            raise ErasekitError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        samples_text = (rec.get("samples") or "1").strip()
        if not _WHOLE.fullmatch(samples_text) or not 1 <= int(samples_text) <= MAX_SAMPLES:
            raise ErasekitError(
                f"{where}: samples {samples_text!r} must be a whole number from 1 to {MAX_SAMPLES}; for more, "
                "repeat the row with another seed"
            )
        block_text = (rec.get("seed_block") or "0").strip()
        if not _WHOLE.fullmatch(block_text) or int(block_text) > MAX_SAMPLES:
            raise ErasekitError(f"{where}: seed_block {block_text!r} must be a whole number from 0 to {MAX_SAMPLES}")
        expected = {c: _label(c, rec[c].strip(), where) for c in LABEL_COLUMNS if (rec.get(c) or "").strip()}
        group = (rec.get("group") or "").strip()
        rows.append(PromptRow(prompt, seed, role, expected, int(samples_text), group, int(block_text)))
    if not rows:
        raise ErasekitError(f"{source} has no prompts")
    check_total(rows, source)
    return rows


def check_total(rows: list[PromptRow], source: str) -> None:
    """Refuse a file whose rows ask for more than :data:`MAX_IMAGES` images in all (days of generation)."""
    total = sum(r.samples for r in rows)
    if total > MAX_IMAGES:
        raise ErasekitError(
            f"{source} asks for {total:,} images ({len(rows):,} rows); a prompt file may ask for at most {MAX_IMAGES:,}: "
            "split it over several files or lower samples"
        )


def unterminated_quote(text: str) -> int | None:
    """The line on which a quoted field opens that no quote closes, or None. The csv reader (not strict)
    takes such a field to the end of the file as one value, so only its last record can hold one."""
    reader = csv.reader(io.StringIO(text, newline=""))
    start, last = 1, None
    for _ in reader:
        last, start = start, reader.line_num + 1
    if last is None:
        return None
    tail = "".join(io.StringIO(text, newline="").readlines()[last - 1 :])  # split as the reader counts lines
    try:
        for _ in csv.reader(io.StringIO(tail, newline=""), strict=True):
            pass
    except csv.Error as err:
        return last if "unexpected end of data" in str(err) else None
    return None


def read_prompt_file(path: Path | str) -> list[PromptRow]:
    """Read and validate a prompt file; a name without a folder is looked up in erasekit/prompts."""
    path = Path(path)
    if not path.exists() and not path.parent.name and (PROMPT_DIR / path).exists():
        path = PROMPT_DIR / path
    if not path.exists():
        raise ErasekitError(f"prompt file {path} does not exist; give a CSV path (columns: prompt, seed, role, ...)")
    from erasekit.io import read_user_text

    try:
        text = read_user_text(path, "prompt file")
        if (line := unterminated_quote(text)) is not None:
            raise ErasekitError(
                f"{path}, line {line}: a quote opens a field here and is never closed; close it (a quote inside "
                'a quoted field is written "")'
            )
        reader = csv.DictReader(io.StringIO(text, newline=""))
        missing = {"prompt", "seed", "role"} - {(name or "").strip() for name in reader.fieldnames or []}
        if missing:
            raise ErasekitError(f"{path}: missing column(s) {', '.join(sorted(missing))}; the header needs prompt, seed, role")
        rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    except csv.Error as err:
        raise ErasekitError(f"{path} is not a readable CSV: {err}") from None
    return parse_rows(rows, source=str(path))


def write_prompt_file(path: Path, rows: list[PromptRow]) -> None:
    """Write ``rows`` as a prompt file (atomically)."""
    from erasekit.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "seed", "role", *LABEL_COLUMNS, "samples", "group", "seed_block"])
        for r in rows:
            labels = (r.expected.get(c, "") for c in LABEL_COLUMNS)
            writer.writerow([r.prompt, r.seed, r.role, *labels, r.samples, r.group, r.seed_block or ""])
