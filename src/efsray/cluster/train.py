"""The sweep's "train" step: keep the best parameter set as a versioned model checkpoint.

The model of a parameter sweep is the parameter set that ranked first (by the mean of a metric
over the symbols), with the metrics that chose it, the market-data versions it was chosen on
and the run ids of its results in ``store.results``. It is saved as a JSON checkpoint of model
``<strategy>-<timeframe>`` through the store's checkpoints, and the alias (``best`` by
default) moves to the new version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from efsray.cluster.journal import canonical_json
from efsray.errors import ConfigError
from efsray.store import Store, validate_name

if TYPE_CHECKING:
    from efsray.cluster.sweep import SweepReport

__all__ = ["best_model", "save_best"]


def best_model(report: SweepReport, *, metric: str = "sharpe") -> dict[str, Any]:
    """The checkpoint content for the best parameter set of ``report`` (JSON-safe)."""
    ranking = report.ranking(metric)
    if not ranking:
        raise ConfigError("the sweep has no results to choose a best parameter set from")
    best = ranking[0]
    return {
        "kind": "efsray-strategy-params",
        "strategy": report.strategy,
        "timeframe": report.timeframe,
        "params": dict(best.params),
        "ranked_by": metric,
        "metrics": {
            "sharpe": best.sharpe,
            "sortino": best.sortino,
            "total_return": best.total_return,
            "annualized_return": best.annualized_return,
            "max_drawdown": best.max_drawdown,
            "win_rate": best.win_rate,
            "trades": best.trades,
            "symbols": best.symbols,
        },
        "sweep_id": report.sweep_id,
        "market_versions": dict(report.versions),
        # the stored results it was chosen on (`efsray results show RUN_ID`), per symbol
        "results": {p.symbol: p.result_id for p in report.points if p.key == best.key},
    }


def save_best(
    root: str | Path, report: SweepReport, metric: str = "sharpe", alias: str = "best"
) -> dict[str, Any]:
    """Save :func:`best_model` as a checkpoint and point ``alias`` at it; returns the model
    id, version, alias, path, and whether a new version was created (a re-run of the same
    sweep finds its checkpoint already there)."""
    store = Store(root, create=False)
    checkpoints = getattr(store, "checkpoints", None)
    if checkpoints is None:
        raise ConfigError(
            "saving the best parameters needs the store's model checkpoints, which this "
            "build of efsray does not have yet; run without --train"
        )
    model = best_model(report, metric=metric)
    model_id = validate_name("model id", f"{report.strategy}-{report.timeframe}")
    payload = _json_bytes(model)
    info = _same_latest(checkpoints, model_id, payload)
    created = info is None
    if info is None:
        metadata = json.loads(payload)
        metadata.pop("kind", None)
        info = checkpoints.save(model_id, payload, metadata=metadata)
    if checkpoints.aliases(model_id).get(alias) != info.version:
        checkpoints.set_alias(model_id, alias, info.version)
    return {
        "model_id": model_id,
        "version": info.version,
        "alias": alias,
        "path": str(info.path),
        "created": created,
    }


def _same_latest(checkpoints: Any, model_id: str, payload: bytes) -> Any:
    """The latest version when it already holds exactly ``payload`` (a re-run of the same
    sweep): saving again would only add an identical version."""
    if checkpoints.latest_version(model_id) is None:
        return None
    data, info = checkpoints.load_bytes(model_id)
    return info if data == payload else None


def _json_bytes(value: dict[str, Any]) -> bytes:
    # NaN metrics (e.g. no trades) are not JSON: store them as null.
    def clean(v: Any) -> Any:
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    return canonical_json(clean(value))
