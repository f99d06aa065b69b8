"""Ray integration: connect to a cluster (or a private local Ray) and run backtest sweeps
whose tasks read and write the shared store directly.

Ray itself is imported lazily, inside the functions that need it, so that importing this
package (for :func:`parse_ray_address`, say) stays cheap and works without Ray installed.
"""

from __future__ import annotations

from efsray.cluster.address import (
    DASHBOARD_PORT,
    GCS_PORT,
    RAY_CLIENT_PORT,
    RayAddress,
    parse_ray_address,
)
from efsray.cluster.connect import ClusterInfo, auth_environment, cluster_info, connect, probe_tcp

__all__ = [
    "DASHBOARD_PORT",
    "GCS_PORT",
    "RAY_CLIENT_PORT",
    "ClusterInfo",
    "RayAddress",
    "auth_environment",
    "cluster_info",
    "connect",
    "parse_ray_address",
    "probe_tcp",
]
