"""Parameter grids: ``"fast=5:50:5,slow=20:200:20"`` into the list of parameter sets to run.

Grammar (whitespace around tokens is ignored)::

    grid  := axis ("," axis)*
    axis  := NAME "=" values
    values:= number                      a single value
           | number ("|" number)+        a list, kept in the order given
           | number ":" number [":" number]   start:stop[:step], both ends inclusive

Names are identifiers (``fast``, ``entry_z``). A range's step defaults to 1, must be positive,
and ``stop >= start``; the stop is included when the steps land on it. Numbers are exact
decimals: ``0.1:0.3:0.1`` gives 0.1, 0.2, 0.3 (no floating-point drift). An axis whose every
number is an integer literal gives ``int`` values, otherwise ``float``. The points of the grid
are the cartesian product of the axes, in the order the axes were written.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from efsray.errors import ConfigError

__all__ = [
    "MAX_AXIS_VALUES",
    "MAX_GRID_POINTS",
    "ParamGrid",
    "format_grid",
    "parse_grid",
]

MAX_AXIS_VALUES = 10_000
MAX_GRID_POINTS = 1_000_000
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_INT_LITERAL = re.compile(r"[+-]?[0-9]+")
_SYNTAX = (
    "write NAME=START:STOP:STEP, NAME=A|B|C or NAME=VALUE, separated by commas, "
    'e.g. "fast=5:50:5,slow=20:200:20"'
)

Value = int | float


@dataclass(frozen=True, slots=True)
class ParamGrid:
    """Named axes of values; iterate :meth:`points` for every combination."""

    axes: tuple[tuple[str, tuple[Value, ...]], ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.axes)

    @property
    def size(self) -> int:
        size = 1
        for _, values in self.axes:
            size *= len(values)
        return size

    def points(self) -> Iterator[dict[str, Value]]:
        """Every combination as a dict, the last axis varying fastest."""
        names = self.names
        for combo in itertools.product(*(values for _, values in self.axes)):
            yield dict(zip(names, combo, strict=True))

    def as_dict(self) -> dict[str, list[Value]]:
        return {name: list(values) for name, values in self.axes}

    @classmethod
    def from_mapping(cls, axes: Mapping[str, Value | list[Value] | tuple[Value, ...]]) -> ParamGrid:
        """Build a grid from ``{"fast": [5, 10], "slow": 50}`` (a scalar is a one-value axis)."""
        out = []
        for name, raw in axes.items():
            _check_name(name, f"{name}=...")
            values = tuple(raw) if isinstance(raw, list | tuple) else (raw,)
            if not values:
                raise ConfigError(f"grid axis {name!r} has no values; give at least one")
            for value in values:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigError(
                        f"grid axis {name!r} has value {value!r}; values must be numbers"
                    )
            out.append((name, values))
        return _checked(tuple(out))


def parse_grid(spec: str) -> ParamGrid:
    """Parse a grid spec; raise :class:`ConfigError` saying which part is wrong and why."""
    if not isinstance(spec, str):
        raise ConfigError(f"grid spec must be a string, got {type(spec).__name__}")
    if not spec.strip():
        raise ConfigError(f"grid spec is empty; {_SYNTAX}")
    axes: list[tuple[str, tuple[Value, ...]]] = []
    seen: set[str] = set()
    for raw_item in spec.split(","):
        item = raw_item.strip()
        if not item:
            raise ConfigError(f"grid spec {spec!r} has an empty item (two commas?); {_SYNTAX}")
        name, eq, body = item.partition("=")
        name, body = name.strip(), body.strip()
        if not eq:
            raise ConfigError(f"grid item {item!r} has no '='; {_SYNTAX}")
        _check_name(name, item)
        if name in seen:
            raise ConfigError(f"grid spec names {name!r} twice; give each parameter once")
        seen.add(name)
        if not body:
            raise ConfigError(f"grid item {item!r} has no values after '='; {_SYNTAX}")
        axes.append((name, _parse_values(name, body, item)))
    return _checked(tuple(axes))


def format_grid(grid: ParamGrid) -> str:
    """The spec that parses back to ``grid`` (values listed with ``|``)."""
    return ",".join(
        f"{name}={'|'.join(_format_value(v) for v in values)}" for name, values in grid.axes
    )


def _format_value(value: Value) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _check_name(name: str, item: str) -> None:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigError(
            f"grid item {item!r}: {name!r} is not a parameter name "
            "(letters, digits and '_', not starting with a digit)"
        )


def _parse_values(name: str, body: str, item: str) -> tuple[Value, ...]:
    if ":" in body and "|" in body:
        raise ConfigError(
            f"grid item {item!r} mixes a range (':') and a list ('|'); use one or the other"
        )
    if ":" in body:
        parts = [p.strip() for p in body.split(":")]
        if len(parts) not in (2, 3):
            raise ConfigError(
                f"grid item {item!r}: a range is START:STOP or START:STOP:STEP, got {body!r}"
            )
        numbers = [_number(p, item) for p in parts]
        start, stop = numbers[0], numbers[1]
        step = numbers[2] if len(numbers) == 3 else Decimal(1)
        if step <= 0:
            raise ConfigError(f"grid item {item!r}: the step must be > 0, got {parts[2]!r}")
        if stop < start:
            raise ConfigError(
                f"grid item {item!r}: the stop {parts[1]} is below the start {parts[0]}; "
                "write START:STOP:STEP with START <= STOP"
            )
        # Compare the (rounded) quotient first: an integer division whose result does not fit
        # the decimal context's precision would raise instead of answering.
        if (stop - start) / step >= MAX_AXIS_VALUES:
            count = MAX_AXIS_VALUES + 1
        else:
            count = int((stop - start) // step) + 1
        if count > MAX_AXIS_VALUES:
            raise ConfigError(
                f"grid item {item!r} gives {count} values, more than {MAX_AXIS_VALUES}; "
                "use a larger step"
            )
        decimals = [start + i * step for i in range(count)]
        integral = all(_INT_LITERAL.fullmatch(p) for p in parts)
    else:
        parts = [p.strip() for p in body.split("|")]
        if len(parts) > MAX_AXIS_VALUES:
            raise ConfigError(
                f"grid item {name}=... lists {len(parts)} values, more than {MAX_AXIS_VALUES}"
            )
        decimals = [_number(p, item) for p in parts]
        integral = all(_INT_LITERAL.fullmatch(p) for p in parts)
        if len(set(decimals)) != len(decimals):
            dup = next(str(d) for d in decimals if decimals.count(d) > 1)
            raise ConfigError(f"grid item {item!r} lists {dup} more than once")
    values: tuple[Value, ...] = (
        tuple(int(d) for d in decimals) if integral else tuple(float(d) for d in decimals)
    )
    if len(set(values)) != len(values):
        raise ConfigError(
            f"grid item {item!r} gives values that are equal as floating-point numbers; "
            "use a larger step or fewer significant digits"
        )
    return values


def _number(text: str, item: str) -> Decimal:
    if not text:
        raise ConfigError(f"grid item {item!r} has an empty number; {_SYNTAX}")
    if _NUMBER.fullmatch(text) is None:
        raise ConfigError(f"grid item {item!r}: {text!r} is not a number; {_SYNTAX}")
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise ConfigError(f"grid item {item!r}: {text!r} is not a number") from None
    if not value.is_finite() or abs(value) > Decimal("1e15"):
        raise ConfigError(f"grid item {item!r}: {text!r} is out of range (|x| <= 1e15)")
    return value


def _checked(axes: tuple[tuple[str, tuple[Value, ...]], ...]) -> ParamGrid:
    grid = ParamGrid(axes)
    if grid.size > MAX_GRID_POINTS:
        raise ConfigError(
            f"grid has {grid.size:,} points, more than {MAX_GRID_POINTS:,}; "
            "use fewer values or larger steps"
        )
    return grid
