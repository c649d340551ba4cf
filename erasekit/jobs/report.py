"""The ``report`` job: one self-contained HTML page over eval, edit and bench runs (see :mod:`erasekit.report`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from erasekit.errors import ErasekitError
from erasekit.io import claim_outputs
from erasekit.report import write_report


@dataclass(frozen=True)
class ReportOptions:
    """What ``erasekit report`` is asked: the runs to show, the page to write, and whether a file
    there that is not an earlier report is replaced (an earlier report always is)."""

    run_dirs: list[Path]
    out: Path = Path("report.html")
    overwrite: bool = False


def check_report(options: ReportOptions) -> None:
    """Refuse a page name that is not HTML before any run is read."""
    if options.out.suffix.lower() not in (".html", ".htm"):
        raise ErasekitError(f"the report is an HTML page; give --out a name ending in .html, not {options.out.name!r}")


def report(options: ReportOptions) -> Path:
    """Read every run, then write the page; its path."""
    check_report(options)
    with claim_outputs([(options.out, None)], options.overwrite or is_report(options.out)):
        return write_report(options.run_dirs, options.out)


def is_report(path: Path) -> bool:
    """Whether ``path`` is a page this job wrote before (which a rerun may replace)."""
    try:
        return path.is_file() and "<title>erasekit report</title>" in path.read_text(encoding="utf-8", errors="ignore")[:4000]
    except OSError:
        return False
