"""Backtest results (``store.results``): one columnar, versioned table per strategy.

- :mod:`~efsray.store.results.records`: what a run is (validation, :class:`RunInfo`);
- :mod:`~efsray.store.results.format`: a batch as a Parquet segment and a sidecar of tables;
- :mod:`~efsray.store.results.manifest`: a version's manifest, as frozen dataclasses;
- :mod:`~efsray.store.results.parts`: reading only some column chunks of a segment;
- :mod:`~efsray.store.results.index`: the run index in each sidecar (a load by id);
- :mod:`~efsray.store.results.open_files`: committed files kept open a second between reads;
- :mod:`~efsray.store.results.table`: commits, merges and retention of one table;
- :mod:`~efsray.store.results.where`: filters, pushed down to manifests;
- :mod:`~efsray.store.results.query`: which segments and columns a query reads;
- :mod:`~efsray.store.results.store`: :class:`ResultStore`, the public face;
- :mod:`~efsray.store.results.legacy` (reader), ``legacy_files`` (its files) and
  ``legacy_write`` (writer): the one-file-per-run layout of older stores;
- :mod:`~efsray.store.results.migrate`: moving legacy runs into the table.
"""

from efsray.store.results.legacy import INLINE_MAX_BYTES
from efsray.store.results.records import BacktestRun, RunInfo, RunSpec
from efsray.store.results.store import ResultStore
from efsray.store.results.where import parse_where

__all__ = ["INLINE_MAX_BYTES", "BacktestRun", "ResultStore", "RunInfo", "RunSpec", "parse_where"]
