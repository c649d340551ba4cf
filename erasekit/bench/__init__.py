"""The bench: every method against every task, measured in resumable cells, summarised in tables.

* :mod:`~erasekit.bench.entries`: a bench column (a method with settings) and its method string.
* :mod:`~erasekit.bench.cells`: what each kind of cell holds, and how a cell is named in progress lines.
* :mod:`~erasekit.bench.tasks`: the object, character, artist and flames tasks (:func:`run_bench`).
* :mod:`~erasekit.bench.mass`: mass erasure on the character roster, and its cost in fresh processes.
* :mod:`~erasekit.bench.robustness`: every method beside every attack.
* :mod:`~erasekit.bench.tables`: the markdown tables of every bench result, the committed ones included.
"""
