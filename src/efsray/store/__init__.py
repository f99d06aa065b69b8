"""The shared data store: market data, checkpoints and backtest results on a POSIX volume.

Every write goes through the NFS commit protocol in :mod:`efsray.store.nfs`.
"""

from efsray.store.layout import StoreLayout
from efsray.store.manager import EFSDataManager, EFSDataPath
from efsray.store.market import CommitInfo, MarketDataStore, SeriesInfo, VersionInfo
from efsray.store.names import validate_name
from efsray.store.store import Store

__all__ = [
    "CommitInfo",
    "EFSDataManager",
    "EFSDataPath",
    "MarketDataStore",
    "SeriesInfo",
    "Store",
    "StoreLayout",
    "VersionInfo",
    "validate_name",
]
