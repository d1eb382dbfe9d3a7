"""Exceptions that say what pyrobnn knowingly does not do."""
from __future__ import annotations


class Unsupported(ValueError):
    """A combination pyrobnn does not support (e.g. local reparameterisation on a recurrent net),
    raised with one line naming it. A ValueError, so ``except ValueError`` still catches it."""
