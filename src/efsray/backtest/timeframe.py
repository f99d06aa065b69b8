"""Bar timeframes ("1m", "5m", "1h", "1d", ...) and the annualization they imply.

A timeframe is a positive count and a unit: ``s`` seconds, ``m`` minutes, ``h`` hours,
``d`` days, ``w`` weeks. Units are lowercase only: ``1M`` could mean a month or a minute, so it
is refused rather than guessed. Annualization depends on the market's calendar: a crypto
market trades 365 days of 24 hours, a US equity market about 252 days of 6.5 hours; the
default is the 24/7 calendar that the synthetic demo market uses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from efsray.errors import ConfigError

__all__ = [
    "CALENDARS",
    "CALENDAR_24_7",
    "CALENDAR_US_EQUITY",
    "Calendar",
    "Timeframe",
    "calendar_for_periods",
    "guess_calendar",
    "parse_timeframe",
]

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_PATTERN = re.compile(r"([1-9][0-9]{0,5})([a-zA-Z]+)")
_MAX_SECONDS = 366 * 86_400
_EXAMPLES = "e.g. 1m, 5m, 15m, 1h, 4h, 1d or 1w (a count, then s, m, h, d or w)"


@dataclass(frozen=True, slots=True)
class Calendar:
    """How much a market trades per year: ``days_per_year`` days of ``hours_per_day`` hours."""

    days_per_year: float = 365.0
    hours_per_day: float = 24.0

    def __post_init__(self) -> None:
        if not 0 < self.days_per_year <= 366:
            raise ConfigError(
                f"days_per_year={self.days_per_year!r} is out of range; use a value in (0, 366], "
                "e.g. 365 for a 24/7 market or 252 for US equities"
            )
        if not 0 < self.hours_per_day <= 24:
            raise ConfigError(
                f"hours_per_day={self.hours_per_day!r} is out of range; use a value in (0, 24], "
                "e.g. 24 for a 24/7 market or 6.5 for US equities"
            )


CALENDAR_24_7 = Calendar(365.0, 24.0)
CALENDAR_US_EQUITY = Calendar(252.0, 6.5)
CALENDARS = {"24/7": CALENDAR_24_7, "us-equity": CALENDAR_US_EQUITY}
"""Calendars by the names ``efsray backtest --calendar`` takes."""

_WEEK_NS = 7 * 86_400 * 10**9


def guess_calendar(timestamps_ns: Sequence[int]) -> Calendar:
    """The calendar a series trades on, from its bar times (UTC nanoseconds): spanning a
    week or more without a Saturday or Sunday bar means an exchange's (US equity), anything
    else the 24/7 one (crypto, FX, the synthetic demo market)."""
    values = [int(t) for t in timestamps_ns]
    if len(values) < 2 or values[-1] - values[0] < _WEEK_NS:
        return CALENDAR_24_7
    # 1970-01-01 was a Thursday: day 2 of a week counted from Saturday = 0
    weekdays = {((t // 86_400_000_000_000) + 5) % 7 for t in values}
    return CALENDAR_24_7 if weekdays & {0, 1} else CALENDAR_US_EQUITY


def calendar_for_periods(periods_per_year: float, timeframe: Timeframe) -> Calendar:
    """A calendar under which ``timeframe`` has exactly ``periods_per_year`` bars a year."""
    days = periods_per_year * timeframe.seconds / 86_400.0
    if not 0 < days <= 366:
        raise ConfigError(
            f"--periods-per-year {periods_per_year:g} is impossible for {timeframe} bars (at "
            f"most {366 * 86_400 / timeframe.seconds:g}); e.g. 252 for daily US equities"
        )
    return Calendar(days, 24.0)


@dataclass(frozen=True, slots=True)
class Timeframe:
    """A bar length such as ``5m``: ``count`` units of ``unit``."""

    count: int
    unit: str

    @property
    def seconds(self) -> int:
        return self.count * _UNIT_SECONDS[self.unit]

    @property
    def name(self) -> str:
        return f"{self.count}{self.unit}"

    def periods_per_year(self, calendar: Calendar = CALENDAR_24_7) -> float:
        """Bars per year under ``calendar``: intraday bars fill the trading hours, daily and
        longer bars count trading days."""
        if self.seconds < 86_400:
            return calendar.days_per_year * calendar.hours_per_day * 3600.0 / self.seconds
        return calendar.days_per_year * 86_400.0 / self.seconds

    def __str__(self) -> str:
        return self.name


def parse_timeframe(value: str | Timeframe) -> Timeframe:
    """Parse ``"5m"`` into ``Timeframe(5, "m")``; raise :class:`ConfigError` when invalid."""
    if isinstance(value, Timeframe):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"timeframe must be a string such as '1h', got {value!r}")
    match = _PATTERN.fullmatch(value.strip())
    if match is None:
        raise ConfigError(f"invalid timeframe {value!r}: {_EXAMPLES}")
    count, unit = int(match.group(1)), match.group(2)
    if unit not in _UNIT_SECONDS:
        if unit.lower() in _UNIT_SECONDS:
            raise ConfigError(
                f"invalid timeframe {value!r}: units are lowercase ({count}{unit.lower()}); "
                "'M' is refused because it could mean minutes or months"
            )
        raise ConfigError(f"invalid timeframe {value!r}: unknown unit {unit!r}; {_EXAMPLES}")
    timeframe = Timeframe(count, unit)
    if timeframe.seconds > _MAX_SECONDS:
        raise ConfigError(
            f"invalid timeframe {value!r}: bars longer than a year are not supported; {_EXAMPLES}"
        )
    return timeframe
