"""The conformance cases, one module per area; importing this package registers them all."""

from tests.conformance.cases import (  # noqa: F401
    checkpoints,
    clients,
    concurrency,
    market,
    results,
    retention,
    seed,
)
