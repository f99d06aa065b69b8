"""The shared data store: market data, checkpoints and backtest results on a POSIX volume.

Every write goes through the NFS commit protocol in :mod:`efsray.store.nfs`.
"""

from efsray.store.checkpoint_files import CheckpointFile
from efsray.store.checkpoints import CheckpointInfo, CheckpointStore, PruneResult, RetentionPolicy
from efsray.store.layout import StoreLayout
from efsray.store.manager import EFSDataManager, EFSDataPath
from efsray.store.market import CommitInfo, MarketDataStore, SeriesInfo, VersionInfo
from efsray.store.names import validate_name
from efsray.store.results import BacktestRun, ResultStore, RunInfo, parse_where
from efsray.store.retention import AreaReport, CleanupReport
from efsray.store.store import Store

__all__ = [
    "AreaReport",
    "BacktestRun",
    "CheckpointFile",
    "CheckpointInfo",
    "CheckpointStore",
    "CleanupReport",
    "CommitInfo",
    "EFSDataManager",
    "EFSDataPath",
    "MarketDataStore",
    "PruneResult",
    "ResultStore",
    "RetentionPolicy",
    "RunInfo",
    "SeriesInfo",
    "Store",
    "StoreLayout",
    "VersionInfo",
    "parse_where",
    "validate_name",
]
