"""A FUSE filesystem that behaves like EFS where applications notice, for tests and laptops.

``efsray simulate MOUNTPOINT --backing DIR`` (or :class:`SimFSProcess` from Python) mounts a
passthrough of ``DIR`` that adds per-operation latency (:mod:`~efsray.simfs.profiles`),
refuses ``renameat2`` flags like the NFS client, does not trust O_APPEND, counts every
operation by kind, and injects errors or hangs on command through a control socket
(:class:`SimFSControl`). See docs/simfs.md.

Importing this package does not load libfuse; only a running simulator does.
"""

from __future__ import annotations

from efsray.simfs.control import OpCounters, SimFSControl
from efsray.simfs.faults import FAULT_ERRNOS, FaultRule, HangRule
from efsray.simfs.mounts import ensure_unmounted, fuse_unavailable_reason, is_mounted, unmount
from efsray.simfs.process import SimFSProcess
from efsray.simfs.profiles import OP_CATEGORY, OP_KINDS, PROFILES, LatencyProfile, get_profile
from efsray.simfs.spec import SimFSConfig, default_control_path

__all__ = [
    "FAULT_ERRNOS",
    "OP_CATEGORY",
    "OP_KINDS",
    "PROFILES",
    "FaultRule",
    "HangRule",
    "LatencyProfile",
    "OpCounters",
    "SimFSConfig",
    "SimFSControl",
    "SimFSProcess",
    "default_control_path",
    "ensure_unmounted",
    "fuse_unavailable_reason",
    "get_profile",
    "is_mounted",
    "unmount",
]
