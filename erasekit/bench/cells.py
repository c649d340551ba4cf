"""The bench's cells: what the summaries and tables read of each kind, and how a cell is named in
the progress lines. Reading a cell back and warning about a damaged one is
:mod:`erasekit.eval.cells`'s, shared with the single-attack runner."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from erasekit.bench.entries import BenchEntry

# what the summaries and tables read of each kind of cell
PROTOCOL_CELL = ("metrics", "world_fid_kept")
BENCH_CELL = ("concept", *PROTOCOL_CELL, "seconds", "peak_rss_mb")
TIMING_CELL = ("seconds", "peak_rss_mb")
ROSTER_CELL = ("count", "seconds_per_concept", "peak_rss_mb")  # mass and cost cells alike


def cell_label(job: tuple[BenchEntry, object]) -> str:
    """How :func:`~erasekit.eval.cells.counted` names a bench cell: the entry, and the concept or "all concepts at once"."""
    entry, about = job
    return f"{entry.label} on {about if about is not None else 'all concepts at once'}"
