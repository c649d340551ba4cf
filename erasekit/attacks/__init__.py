"""Attacks on erased models, one module each, in one registry (``ATTACKS``, filled by :func:`get_attack`
and :func:`load_attacks` on first use; importing the package does not import the attack modules)."""

from erasekit.attacks.base import ATTACKS, AttackContext, AttackTarget, Found, get_attack, load_attacks

__all__ = ["ATTACKS", "AttackContext", "AttackTarget", "Found", "get_attack", "load_attacks"]
