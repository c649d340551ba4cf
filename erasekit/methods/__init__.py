"""Erasure methods, one module each; importing this package registers them all."""

from erasekit.methods import ac, advunlearn, doco, esd, mace, race, realera, rece, receler, sld, spm, uce  # noqa: F401
from erasekit.methods.base import METHODS, EraseSpec, get_method

__all__ = ["METHODS", "EraseSpec", "get_method"]
