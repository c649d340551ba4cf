"""The package version, below every module that records it (edit cards, the CLI's --version)."""

__version__ = "0.1.0"
