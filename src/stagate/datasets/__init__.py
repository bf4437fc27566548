"""Built-in data: a simulator with known domains."""

from ._simulate import simulate

__all__ = ["simulate"]
