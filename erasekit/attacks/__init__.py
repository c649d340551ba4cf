"""Attacks on erased models, one module each; importing this package registers them all."""

from erasekit.attacks import inversion, p4d, ringabell, unlearndiff  # noqa: F401
from erasekit.attacks.base import ATTACKS, AttackContext, AttackTarget, Found, get_attack

__all__ = ["ATTACKS", "AttackContext", "AttackTarget", "Found", "get_attack"]
