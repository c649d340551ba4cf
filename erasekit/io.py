"""Writes that lose nothing: a result or model appears whole under its final name, or not at all.

* :func:`atomic_path` / :func:`atomic_dir` write beside the target and swap it in.
* :func:`claim_output` is taken before a command's work starts: it refuses an output path holding
  anything that is not a previous erasekit output of the same kind (unless ``overwrite``), locks
  the path against a second run, and clears what interrupted writes to it left behind.
* Files and directories get the permissions the umask gives, not ``tempfile``'s private 0600/0700.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from erasekit.errors import ErasekitError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _current_umask()


def _public(path: str | Path, directory: bool) -> None:
    """The mode a plain ``open``/``mkdir`` would have given (tempfile makes everything private)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~UMASK)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    _public(tmp, directory=False)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_user_text(path: Path | str, what: str) -> str:
    """A user's text file (CSV, vocabulary, prompt list) as UTF-8, a byte-order mark allowed; anything
    else is one line naming the file and where it stops being UTF-8."""
    path = Path(path)
    if path.is_dir():
        raise ErasekitError(f"{what} {path} is a directory; give a file")
    if not path.is_file():
        raise ErasekitError(f"{what} {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ErasekitError(f"cannot read {what} {path}: {err.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ErasekitError(
            f"{what} {path} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); save it as UTF-8"
        ) from None


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")


def write_with(path: Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp)`` and move the file it wrote onto ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    _public(tmp, directory=True)
    try:
        yield tmp
        for child in tmp.rglob("*"):  # libraries that write privately (safetensors: 0600) get the umask's mode too
            if not child.is_symlink():
                _public(child, directory=child.is_dir())
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", suffix=".tmp", dir=path.parent))
            os.replace(path, old / "x")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# What a previous output of each kind holds: the files that mark it, and what else it may hold.
OUTPUT_KINDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "edit": (
        frozenset({"card.json", "edit.safetensors"}),
        frozenset({"pytorch_lora_weights.safetensors", "adapters.safetensors", "README.md"}),
    ),
    "lora": (frozenset({"pytorch_lora_weights.safetensors"}), frozenset()),
    "run": (frozenset({"run.json", "images.npz"}), frozenset({"grid.png", "prompts.csv", "results.json"})),
    "eval": (frozenset({"results.json"}), frozenset({"before_after.png", "report.html"})),
    "pipeline": (frozenset({"model_index.json"}), frozenset()),
    "gates": (frozenset({"run.json", "images.npz"}), frozenset({"grid.png", "prompts.csv", "gates.json", "gates.md"})),
    # an attack run resumes from its cells too
    "attack": (frozenset(), frozenset({"cells", "results.json", "grid.png", "report.html"})),
    # a bench directory resumes from its cells, so a half-done one (cells only) is a bench output too
    "bench": (
        frozenset(),
        frozenset(
            {"cells", "report.html", *(f"{n}.{x}" for n in ("bench", "mass", "cost", "robustness") for x in ("json", "md"))}
        ),
    ),
}
_HELD: set[Path] = set()  # output paths this process has claimed (a claim inside a claim is a no-op)


def is_output_of_kind(path: Path, kind: str) -> bool:
    """Whether directory ``path`` is what an earlier erasekit write of ``kind`` left, and nothing more."""
    markers, optional = OUTPUT_KINDS[kind]
    names = {p.name for p in path.iterdir()}
    if not markers <= names:
        return False
    allowed = markers | optional
    if kind == "pipeline":  # the components model_index.json names
        try:
            allowed |= set(json.loads((path / "model_index.json").read_text()))
        except (OSError, ValueError):
            return False
    for name in names - allowed:
        child = path / name
        inner = {"eval-": "eval", "attack-": "attack"}  # an edit directory keeps its eval and attack runs
        prefix = next((k for k in inner if name.startswith(k)), None)
        if not (kind == "edit" and prefix and child.is_dir() and is_output_of_kind(child, inner[prefix])):
            return False
    return True


def check_output(path: Path, kind: str | None, overwrite: bool = False) -> None:
    """Refuse ``path`` when writing it could destroy what the user had. ``kind=None``: a single file."""
    path = Path(path)
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ErasekitError(f"cannot write {path}: {parent} is a file, not a directory")
        if parent.exists():
            if not os.access(parent, os.W_OK):
                raise ErasekitError(f"cannot write {path}: {parent} is not writable")
            break
    if overwrite or not (path.exists() or path.is_symlink()):
        return
    if kind is None:
        if path.is_dir():
            raise ErasekitError(f"{path} is a directory; give a file name for this output")
        raise ErasekitError(f"{path} exists; choose another path or pass --overwrite to replace it")
    if not path.is_dir() or path.is_symlink():
        raise ErasekitError(f"{path} exists and is not a directory; choose another --out or pass --overwrite")
    if any(path.iterdir()) and not is_output_of_kind(path, kind):
        raise ErasekitError(
            f"{path} holds files that are not an erasekit {kind} output; choose another --out or pass --overwrite"
        )


def _clear_leftovers(path: Path) -> None:
    """Undo what interrupted atomic writes to ``path`` left: temporaries go; an old output moved aside
    for a swap that never finished comes back."""
    for old in path.parent.glob(f".{glob.escape(path.name)}.old.{'?' * 8}.tmp"):
        if not path.exists() and (old / "x").exists():
            os.replace(old / "x", path)
        shutil.rmtree(old, ignore_errors=True)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.{'?' * 8}.tmp"):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)


def _lock_holder(lock: Path) -> int | None:
    """The pid in ``lock`` if that process still runs (on this machine), else None."""
    try:
        pid = int(lock.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


@contextmanager
def claim_output(path: Path, kind: str | None, overwrite: bool = False) -> Iterator[Path]:
    """Check ``path`` (see :func:`check_output`), hold a lock on it for the block, and first remove
    what interrupted writes to it left (``.NAME.*.tmp`` beside it)."""
    path = Path(path).absolute()
    if path in _HELD:
        yield path
        return
    check_output(path, kind, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~UMASK)
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None and holder != os.getpid():
                raise ErasekitError(f"another erasekit run (pid {holder}) is writing {path}; wait for it to finish") from None
            lock.unlink(missing_ok=True)  # left by a run that no longer exists
    else:
        raise ErasekitError(f"could not lock {path} (remove {lock} if no erasekit run is writing it)")
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    _HELD.add(path)
    try:
        _clear_leftovers(path)
        yield path
    finally:
        _HELD.discard(path)
        lock.unlink(missing_ok=True)
