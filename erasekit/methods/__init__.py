"""Erasure methods, one module each, in one registry (``METHODS``).

The registry fills on first use (``erasekit.methods.METHODS``, :func:`get_method`): importing the
package does not import the method modules, so the command line answers a bad flag or a bad concept
list without loading torch."""

from typing import Any

from erasekit.concepts import EraseSpec
from erasekit.methods.base import get_method, load_methods

__all__ = ["METHODS", "EraseSpec", "get_method"]


def __getattr__(name: str) -> Any:
    if name == "METHODS":
        return load_methods()
    raise AttributeError(f"module 'erasekit.methods' has no attribute {name!r}")
