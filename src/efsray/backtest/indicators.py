"""Causal rolling indicators in O(n) numpy: the value at bar t uses bars t-w+1 .. t only.

Rolling sums come from one cumulative sum of the series minus its first value (the anchor).
Subtracting the anchor keeps the cumulative sums small for price series, which is what keeps
the rolling variance (a difference of sums of squares) accurate; a constant series gives
exactly zero mean deviation and zero variance. Bars before the first full window are NaN.

:class:`Indicators` computes the cumulative sums of one series once and caches the indicators
it was asked for, so a grid of parameter sets over one symbol (a sweep task) computes each
moving average once, not once per parameter set.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Indicators", "pct_change", "rolling_mean", "rolling_mean_std"]

FloatArray = npt.NDArray[np.float64]


class Indicators:
    """Cached indicators of one close-price series (at most ``max_cached`` arrays kept)."""

    def __init__(self, close: FloatArray, *, max_cached: int = 64) -> None:
        self.close = close
        self.n = int(close.shape[0])
        self.anchor = float(close[0]) if self.n else 0.0
        self._s1: FloatArray | None = None
        self._s2: FloatArray | None = None
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._max = max_cached

    def _cached(self, key: tuple[Any, ...], make: Any) -> Any:
        hit = self._cache.get(key)
        if hit is None:
            hit = make()
            for arr in hit if isinstance(hit, tuple) else (hit,):
                arr.flags.writeable = False  # shared by every caller: never changed in place
            self._cache[key] = hit
            if len(self._cache) > self._max:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return hit

    def _sums(self, squares: bool) -> FloatArray:
        """Cumulative sums (with a leading 0) of the anchored series or of its squares."""
        if squares:
            if self._s2 is None:
                d = self.close - self.anchor
                self._s2 = np.concatenate(([0.0], np.cumsum(d * d)))
            return self._s2
        if self._s1 is None:
            self._s1 = np.concatenate(([0.0], np.cumsum(self.close - self.anchor)))
        return self._s1

    def sma(self, window: int) -> FloatArray:
        """Mean of the last ``window`` closes at each bar (NaN until a full window exists)."""

        def make() -> FloatArray:
            out = np.full(self.n, np.nan)
            if window <= self.n:
                s1 = self._sums(False)
                out[window - 1 :] = (s1[window:] - s1[:-window]) / window + self.anchor
            return out

        result: FloatArray = self._cached(("sma", window), make)
        return result

    def mean_std(self, window: int) -> tuple[FloatArray, FloatArray]:
        """Rolling mean and population standard deviation (ddof=0) over ``window`` bars."""

        def make() -> tuple[FloatArray, FloatArray]:
            mean = np.full(self.n, np.nan)
            std = np.full(self.n, np.nan)
            if window <= self.n:
                s1, s2 = self._sums(False), self._sums(True)
                m = (s1[window:] - s1[:-window]) / window
                var = np.maximum((s2[window:] - s2[:-window]) / window - m * m, 0.0)
                mean[window - 1 :] = m + self.anchor
                std[window - 1 :] = np.sqrt(var)
            return mean, std

        result: tuple[FloatArray, FloatArray] = self._cached(("mean_std", window), make)
        return result

    def pct_change(self, lag: int) -> FloatArray:
        """``close[t] / close[t-lag] - 1`` (NaN for the first ``lag`` bars)."""

        def make() -> FloatArray:
            out = np.full(self.n, np.nan)
            if lag < self.n:
                out[lag:] = self.close[lag:] / self.close[:-lag] - 1.0
            return out

        result: FloatArray = self._cached(("pct_change", lag), make)
        return result


def rolling_mean(x: FloatArray, window: int) -> FloatArray:
    """Mean of the last ``window`` values at each bar (NaN until a full window exists)."""
    return Indicators(x).sma(window)


def rolling_mean_std(x: FloatArray, window: int) -> tuple[FloatArray, FloatArray]:
    """Rolling mean and population standard deviation (ddof=0) over ``window`` bars."""
    return Indicators(x).mean_std(window)


def pct_change(x: FloatArray, lag: int) -> FloatArray:
    """``x[t] / x[t-lag] - 1`` (NaN for the first ``lag`` bars)."""
    return Indicators(x).pct_change(lag)
