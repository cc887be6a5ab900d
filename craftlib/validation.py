"""The allowed range of every numeric setting, defined once.

The config objects (``TrainConfig``, ``ModelConfig``, ``CraftSpec``, ``Recipe``) check their fields
with ``check``, and the command lines parse their flags with ``flag``: a notebook and a terminal
refuse the same values with the same words, before anything is trained or written.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Callable


@dataclass(frozen=True)
class Range:
    """Integers (``integer``) or finite numbers from ``low`` to ``high`` (``None``: unbounded), ends
    included unless ``open_low``/``open_high``; ``multiple_of`` for sizes the network halves three
    times."""

    integer: bool
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    multiple_of: int = 1

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.multiple_of > 1:
            kind = f"a multiple of {self.multiple_of}"
        if self.low is not None and self.high is not None:
            return (
                f"{kind} in {'(' if self.open_low else '['}{_number(self.low)}, "
                f"{_number(self.high)}"
                f"{')' if self.open_high else ']'}"
            )
        if self.low is not None:
            return f"{kind} {'>' if self.open_low else '>='} {_number(self.low)}"
        return kind

    def admits(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, Integral if self.integer else Real):
            return False
        if not math.isfinite(value) or (self.multiple_of > 1 and value % self.multiple_of):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


SEED_MAX = 2**32 - 1  # NumPy's seeds stop there

RANGES: dict[str, Range] = {
    # training (TrainConfig)
    "epochs": Range(True, 1),
    "batch_size": Range(True, 1),
    "lr": Range(False, 0, open_low=True),
    "momentum": Range(False, 0, 1, open_high=True),
    "weight_decay": Range(False, 0),
    "warmup_fraction": Range(False, 0, 1, open_low=True, open_high=True),
    "scale": Range(False, 0, open_low=True),
    "margin": Range(False, 0),
    "grad_clip": Range(False, 0, open_low=True),
    "seed": Range(True, 0, SEED_MAX),
    "threads": Range(True, 1),
    # the model and the data (ModelConfig, Recipe)
    "input_size": Range(True, 8, multiple_of=8),
    "max_identities": Range(True, 1),
    # CRAFT (CraftSpec)
    "tau": Range(False, 0, 1),
    "strong_quantile": Range(False, 0, 1, open_high=True),
    "first_epoch": Range(True, 1),
    "last_epoch": Range(True, 1),
    "every": Range(True, 1),
    # studies (compare, companion, dose, attribute)
    "seeds": Range(True, 1),
    "first_seed": Range(True, 0, SEED_MAX),
    "jobs": Range(True, 1),
    "seconds": Range(False, 0, open_low=True),
}
FLAG_NAMES = {"size": "input_size"}  # a flag whose field is named otherwise


def check(name: str, value, optional: bool = False):
    """``value`` if it is in ``RANGES[name]`` (or ``None`` where ``optional``), else a
    ``ValueError`` naming the range."""
    if optional and value is None:
        return value
    rule = RANGES[name]
    if not rule.admits(value):
        raise ValueError(f"{name} must be {rule.describe()}, got {value!r}")
    return value


def flag(name: str) -> Callable[[str], int | float]:
    """An argparse ``type=`` for the setting ``name`` (``"batch-size"`` or ``"batch_size"``): parses
    the text and checks ``RANGES``; argparse then exits 2 with "argument --NAME: must be ..."."""
    key = name.replace("-", "_")
    rule = RANGES[FLAG_NAMES.get(key, key)]

    def parse(text: str) -> int | float:
        try:
            value = int(text) if rule.integer else float(text)
        except ValueError:
            value = None
        if value is None or not rule.admits(value):
            raise argparse.ArgumentTypeError(f"must be {rule.describe()}, got {text!r}")
        return value

    parse.__name__ = key  # argparse names the type in some messages
    return parse


def check_batch(batch_size: int, faces: int) -> int:
    """A batch larger than the training set would make every epoch one short step: refuse it."""
    if batch_size > faces:
        raise ValueError(
            f"batch_size must be at most the {faces} training faces (an epoch is at least one full "
            f"batch), got {batch_size}"
        )
    return batch_size
