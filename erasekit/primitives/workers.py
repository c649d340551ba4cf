"""The processes a run is shared out among: one when run plainly, ``accelerate launch``'s otherwise.

The bench gives each process every n-th cell; MACE gives each every n-th concept's LoRA (they meet in
its adapter directory); ``generate`` gives each every n-th image (they meet through ``gather``). Who computes a piece changes nothing, since its seeds depend only on the
piece, so several processes give what one gives.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Workers:
    """Process ``index`` of ``count``: it takes jobs index, index + count, … of a fixed job list (bench
    cells, MACE's concepts), then all meet at ``barrier`` and the first one gathers from disk."""

    index: int = 0
    count: int = 1
    barrier: Callable[[], None] = lambda: None
    device: str | None = None  # each process's own device (cuda:i) when launched on several GPUs
    gather: Callable[[Any], list[Any]] = lambda piece: [piece]  # every process's piece, in process order, to all

    @property
    def is_main(self) -> bool:
        """Whether this is the first process (the one that gathers)."""
        return self.index == 0

    def share(self, jobs: Sequence[T]) -> list[T]:
        """This process's jobs: every ``count``-th one, from the ``index``-th on."""
        return list(jobs[self.index :: self.count])


def launched_workers(device: str | None) -> Workers:
    """The processes ``accelerate launch`` started for this command (one if it was run plainly).

    On CPU, ``accelerate launch --multi_gpu --num_processes N --num_cpu_threads_per_process T`` starts N
    processes that meet over gloo (accelerate's MULTI_CPU); on GPUs the same command gives each process
    its own GPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Workers(device=device)
    import torch  # here, not at the top: a plain run's command line answers without loading it
    from accelerate import PartialState

    on_cpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cpu")
    # a process that finished its share waits for the slowest piece: far beyond gloo's 30-minute default
    state = PartialState(cpu=on_cpu, timeout=timedelta(days=7))

    def gather(piece: Any) -> list[Any]:
        pieces: list[Any] = [None] * state.num_processes
        torch.distributed.all_gather_object(pieces, piece)
        return pieces

    device = "cpu" if on_cpu else str(state.device)
    return Workers(state.process_index, state.num_processes, state.wait_for_everyone, device, gather)
