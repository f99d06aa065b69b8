"""Causal rolling indicators in O(n) numpy: the value at bar t uses bars t-w+1 .. t only.

Rolling sums come from one cumulative sum of the series minus its first value (the anchor).
Subtracting the anchor keeps the cumulative sums small for price series, which is what keeps
the rolling variance (a difference of sums of squares) accurate; a constant series gives
exactly zero mean deviation and zero variance. Bars before the first full window are NaN.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["pct_change", "rolling_mean", "rolling_mean_std"]

FloatArray = npt.NDArray[np.float64]


def _window_sums(x: FloatArray, window: int, anchor: float) -> tuple[FloatArray, FloatArray]:
    d = x - anchor
    s1 = np.concatenate(([0.0], np.cumsum(d)))
    s2 = np.concatenate(([0.0], np.cumsum(d * d)))
    return s1[window:] - s1[:-window], s2[window:] - s2[:-window]


def rolling_mean(x: FloatArray, window: int) -> FloatArray:
    """Mean of the last ``window`` values at each bar (NaN until a full window exists)."""
    out = np.full(x.shape[0], np.nan)
    if window > x.shape[0]:
        return out
    anchor = float(x[0])
    d = x - anchor
    s1 = np.concatenate(([0.0], np.cumsum(d)))
    out[window - 1 :] = (s1[window:] - s1[:-window]) / window + anchor
    return out


def rolling_mean_std(x: FloatArray, window: int) -> tuple[FloatArray, FloatArray]:
    """Rolling mean and population standard deviation (ddof=0) over ``window`` bars."""
    mean = np.full(x.shape[0], np.nan)
    std = np.full(x.shape[0], np.nan)
    if window > x.shape[0]:
        return mean, std
    anchor = float(x[0])
    sum1, sum2 = _window_sums(x, window, anchor)
    m = sum1 / window
    var = np.maximum(sum2 / window - m * m, 0.0)
    mean[window - 1 :] = m + anchor
    std[window - 1 :] = np.sqrt(var)
    return mean, std


def pct_change(x: FloatArray, lag: int) -> FloatArray:
    """``x[t] / x[t-lag] - 1`` (NaN for the first ``lag`` bars)."""
    out = np.full(x.shape[0], np.nan)
    if lag < x.shape[0]:
        out[lag:] = x[lag:] / x[:-lag] - 1.0
    return out
