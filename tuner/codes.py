"""Codes: the base of the enumerations the tuner stores and compares (a trial's state, why it
was pruned or failed, a goal's mode).

A code is a `str`-valued enum, as Optuna's `TrialState` is an enum (but `str`-valued, so that
what is stored stays readable in a database or a results file, and equal to its value): what is
stored is the code, never the sentence shown for it, so rewording a message changes no stored
data. Its sentence is `text`, rendered from the code.

No imports beyond the standard library: the results readers use codes without torch.
"""

from __future__ import annotations

from enum import Enum


class Code(str, Enum):
    """A stored code: `str(code)` and `f"{code}"` are its value on every Python version (3.10
    formats a `str` mixin by its value, 3.12 by its name otherwise)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def text(self) -> str:
        """The sentence shown for it (subclasses word it); the code itself by default."""
        return self.value

    @classmethod
    def read(cls, value):
        """The code stored as `value`: a code, or the sentence that versions before the codes
        stored for it (None for None). Anything else is refused (ValueError): a hand-edited or
        foreign file fails where it is read."""
        if value is None or isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            pass
        for code in cls:
            if value == code.text:
                return code
        raise ValueError(f"{value!r} is not a {cls.__name__} code "
                         f"({', '.join(c.value for c in cls)})")


__all__ = ["Code"]
