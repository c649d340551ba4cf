"""Jobs: what each command does, with typed options and typed results, below the command line.

A job checks its options before anything loads (so the Python API refuses what the CLI refuses),
does the work with progress, writes its outputs through :mod:`erasekit.io`'s claims, and returns a
result the CLI prints. One module per command family; nothing here parses flags or prints tables.
"""
