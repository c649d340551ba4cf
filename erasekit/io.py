"""Writes that lose nothing: a result or model appears whole under its final name, or not at all.

* :func:`atomic_path` / :func:`atomic_dir` write beside the target and swap it in.
* :func:`claim_output` is taken before a command's work starts: it refuses an output path holding
  anything that is not a previous erasekit output of the same kind (unless ``overwrite``), locks
  the path against a second run, and clears what interrupted writes to it left behind.
* :func:`claim_outputs` is how a job takes its outputs: all checked first, then all claimed (by the
  first process only, under ``accelerate launch``).
* Files and directories get the permissions the umask gives, not ``tempfile``'s private 0600/0700.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
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
        _public(tmp, directory=False)  # a writer that replaced the file (safetensors) made it 0600 again
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
    """``data`` as indented JSON at ``path``, written whole or not at all."""
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


# What interrupted writes leave beside an output NAME: its lock, a temporary, an old copy moved aside.
_LEFTOVER = re.compile(r"\.(?P<name>.+?)(\.lock|(\.old)?\.[a-z0-9_]{8}\.tmp)")
# An edit directory keeps the runs made of it (and its hub card): never replaced without --overwrite.
_EDIT_RUNS = {"eval-": "eval", "attack-": "attack"}


def leftover_of(name: str) -> str | None:
    """The output name whose interrupted write left the file ``name`` (``.NAME.lock``, ``.NAME.*.tmp``), if it is one."""
    match = _LEFTOVER.fullmatch(name)
    return match["name"] if match else None


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
        left_by = leftover_of(name) if kind == "edit" else None
        if left_by and left_by.startswith(tuple(_EDIT_RUNS)):
            continue  # what a killed eval or attack of this edit left: cleared with the directory
        prefix = next((k for k in _EDIT_RUNS if name.startswith(k)), None)
        if not (kind == "edit" and prefix and child.is_dir() and is_output_of_kind(child, _EDIT_RUNS[prefix])):
            return False
    return True


def kept_results(path: Path) -> list[str]:
    """What an edit directory holds besides the edit itself: its eval and attack runs and its hub card,
    which replacing the edit would delete."""
    return sorted(
        p.name for p in path.iterdir() if p.name == "README.md" or (p.is_dir() and any(p.name.startswith(k) for k in _EDIT_RUNS))
    )


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
    busy = [p for p in path.glob(".*.lock") if kind == "edit" and _lock_holder(p) is not None]
    if busy:
        raise ErasekitError(f"an erasekit run is writing {path / busy[0].name[1:-5]}; wait for it to finish")
    results = kept_results(path) if kind == "edit" else []
    if results:
        raise ErasekitError(
            f"{path} holds results of the edit there ({', '.join(results)}), which a new edit would delete; "
            "choose another --out, or pass --overwrite to replace them"
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
    """The pid written in ``lock`` while a live process holds it locked, else None."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: the pid is for the message (0 while the holder is still writing it)
            text = os.read(fd, 32).decode(errors="replace").split()
            return int(text[0]) if text and text[0].isascii() and text[0].isdigit() else 0
        return None  # a lock file whose process is gone (the kernel released its lock)
    finally:
        os.close(fd)


def _take_lock(lock: Path) -> int:
    """Open and lock ``lock`` exclusively; the descriptor, or an error naming the live holder.

    The kernel's lock (flock) dies with its process, so a killed run's file is simply taken over; the
    lock is good only if the file is still the one at ``lock`` once locked (a holder that finished
    removes it, and a waiter must not keep a lock on the removed file)."""
    for _ in range(100):
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o666 & ~UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _lock_holder(lock)
            if holder is None:  # released between the two looks: try again
                continue
            who = f"pid {holder}" if holder else "starting"
            raise ErasekitError(
                f"another erasekit run ({who}) is writing {lock.parent / lock.name[1:-5]}; wait for it to finish"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
    raise ErasekitError(f"could not lock {lock}: it keeps changing (remove it if no erasekit run is writing)")


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
    fd = _take_lock(lock)
    _HELD.add(path)
    try:
        check_output(path, kind, overwrite)  # again under the lock: a run that held it may have written since
        _clear_leftovers(path)
        yield path
    finally:
        _HELD.discard(path)
        lock.unlink(missing_ok=True)  # before the lock is released, so no waiter locks a removed file
        os.close(fd)


def check_outputs(outputs: Iterable[tuple[Path | None, str | None]], overwrite: bool = False) -> list[tuple[Path, str | None]]:
    """Refuse any ``(path, kind)`` of a job's outputs that :func:`check_output` refuses (``None`` paths are
    outputs not asked for), claiming nothing; the outputs asked for. A job calls it first, before the
    checks that import torch, so that a taken path is answered at once."""
    chosen = [(Path(path), kind) for path, kind in outputs if path is not None]
    for path, kind in chosen:
        check_output(path, kind, overwrite)
    return chosen


@contextmanager
def claim_outputs(
    outputs: Iterable[tuple[Path | None, str | None]], overwrite: bool = False, claim: bool = True
) -> Iterator[None]:
    """Check every ``(path, kind)`` of a job's outputs (``None`` paths are outputs not asked for), then
    claim them all for the block (see :func:`claim_output`).

    Every output is checked before the first is locked, so one refused output leaves the others
    untouched. ``claim=False`` is for the other processes of an ``accelerate launch`` run: they check
    in the same way, so none of them starts work that would write over what the user had, and leave
    the locks and the writing to the first."""
    chosen = check_outputs(outputs, overwrite)
    with ExitStack() as claims:
        if claim:
            for path, kind in chosen:
                claims.enter_context(claim_output(path, kind, overwrite))
        yield
