"""The store's round trips counted by the Linux NFS client against Linux's own NFS server
(knfsd) instead of nfs-ganesha (issue 18.2): how much of an append's count is the server's.

One guest serves an ext4 scratch disk with knfsd and mounts it over loopback with EFS's
options (``self_served`` in efsray.testing.guests.vm); the measurements are those of
tests/guests/test_kernel_round_trips.py (20 appends of 5,000 bars after 3, 8 checkpoint saves
of 1 MiB after 3, by one process; /proc/self/mountstats around them). Reads by "a new Store"
there run on a second guest, a client that never saw the store; here the one client forgets
what it cached first (``drop_caches`` drops its dentries, inodes and with them their
attribute and access caches; its NFSv4 session stays).

nfs-ganesha answers every LINK and REMOVE with change information marked "not atomic", and
the client then revalidates every name of the directory (LOOKUP) and its permissions
(ACCESS); knfsd reports atomic change information from the directory's pre- and
post-operation attributes. The counts are deterministic but for a few LOOKUPs and GETATTRs
that the attribute cache's clock decides, hence the small margins (docs/store.md "Round trips
on EFS" has the figures beside ganesha's).
"""

from __future__ import annotations

import pytest

from efsray.testing.guests.vm import Guest
from tests.fixtures.guests import KnfsdGuest
from tests.guests.test_kernel_round_trips import APPENDS, SAVES, SETUP

pytestmark = [pytest.mark.guests, pytest.mark.timeout(900)]

#: Forget what this client cached (as a client that never saw the store): dentries and inodes,
#: and with the inodes their attribute and access caches.
FORGET = """
import os
os.sync()
with open("/proc/sys/vm/drop_caches", "w") as f:
    f.write("3")
"""


def measure_store(guest: Guest, root: str, *, forget: bool) -> dict[str, dict[str, int]]:
    """Per-kind NFS counts of the store's operations on ``guest`` (a fresh ``root``):
    ``append`` and ``save`` over all 20 and 8 calls, the reads one call each."""
    setup = SETUP.replace("ROOT", repr(root))
    prepared = setup + "for i in range(3): store.market.append('SPY', '1m', batch(i))\n"
    prepared += "for _ in range(3): store.checkpoints.save('m', payload)\n"
    counts = {
        "append": guest.measure(
            prepared,
            f"for i in range(3, {3 + APPENDS}): store.market.append('SPY', '1m', batch(i))",
        ).nfs_ops,
        "save": guest.measure(
            setup, f"for _ in range({SAVES}): store.checkpoints.save('m', payload)"
        ).nfs_ops,
    }
    fresh = (FORGET if forget else "") + setup
    tail = "store.market.tail('SPY', '1m', 1000)"
    load = "store.checkpoints.load_bytes('m')"
    counts["tail, new Store"] = guest.measure(fresh, tail).nfs_ops
    counts["tail, repeated"] = guest.measure(setup + tail, tail).nfs_ops
    counts["load, new Store"] = guest.measure(fresh, load).nfs_ops
    counts["load, model read before"] = guest.measure(setup + load, load).nfs_ops
    return counts


def appends_keeping_inputs(guest: Guest, root: str) -> dict[str, int]:
    """Per-kind NFS counts of 20 appends (after 3) whose merges leave their inputs to
    retention (``free_merged_inputs = False``), on a fresh ``root``."""
    setup = SETUP.replace("ROOT", repr(root)) + (
        "store.market.free_merged_inputs = False\n"
        "for i in range(3): store.market.append('SPY', '1m', batch(i))\n"
    )
    body = f"for i in range(3, {3 + APPENDS}): store.market.append('SPY', '1m', batch(i))"
    return guest.measure(setup, body).nfs_ops


def per_call(counts: dict[str, dict[str, int]]) -> dict[str, float]:
    calls = {"append": APPENDS, "save": SAVES}
    return {what: sum(ops.values()) / calls.get(what, 1) for what, ops in counts.items()}


def test_round_trips_of_the_store_against_knfsd(knfsd_guest: KnfsdGuest) -> None:
    """Measured (docs/store.md): append 13.15-13.25 (ganesha 24.35), 10.75-10.90 when merges
    keep their inputs (18.85-18.95), save 14.0-14.25 (21.0), the reads as against ganesha.
    What ganesha's non-atomic change information costs, ACCESS 128 and LOOKUP 108 per 20
    appends, is ACCESS 12 and no LOOKUP here; every other kind of an append is the same count
    against both."""
    guest = knfsd_guest.guest
    guest.run("import os; os.mkdir('knfsd-store')").check()
    counts = measure_store(guest, "knfsd-store/store", forget=True)
    totals = per_call(counts)
    for what, ops in counts.items():
        print(f"knfsd: {what} {totals[what]:.2f} {ops}")
    appends, saves = counts["append"], counts["save"]
    # what our own namespace changes cost against a server reporting atomic change info
    assert appends.get("ACCESS", 0) <= 16 and appends.get("LOOKUP", 0) <= 4, appends
    assert saves.get("ACCESS", 0) <= 20 and saves.get("LOOKUP", 0) <= 4, saves
    # the rest of an append is the server-independent part: 12.55 per append against ganesha
    rest = {k: v for k, v in appends.items() if k not in ("ACCESS", "LOOKUP", "GETATTR")}
    assert sum(rest.values()) == 251, rest  # 20 appends: 2 merges freeing 8 inputs each
    assert totals["append"] <= 13.5  # budget 12: not met (the merges' freeing, 5.5)
    assert totals["save"] <= 14.75  # budget 11: not met (docs/store.md)
    assert totals["tail, repeated"] <= 1 and totals["load, model read before"] <= 3
    assert totals["tail, new Store"] <= 28 and totals["load, new Store"] <= 30
    # merges leaving their inputs to retention: 10.75-10.90 measured, within the budget of 12
    kept = appends_keeping_inputs(guest, "knfsd-store/kept")
    print(f"knfsd: append, inputs kept {sum(kept.values()) / APPENDS:.2f} {kept}")
    assert kept.get("ACCESS", 0) + kept.get("LOOKUP", 0) <= 4, kept
    assert sum(kept.values()) / APPENDS <= 12  # the budget


LINKS = """
import os
from pathlib import Path
from efsray.store.nfs import link_all
D = Path(ROOT); D.mkdir()
"""


def _set_protected_hardlinks(guest: Guest, value: int) -> None:
    guest.run(f"open('/proc/sys/fs/protected_hardlinks', 'w').write('{value}')").check()


def test_what_is_left_of_the_access_calls(knfsd_guest: KnfsdGuest) -> None:
    """Where the ACCESS calls left against knfsd come from (docs/store.md, part 1): every
    link() of a file after its attributes changed asks for the caller's permissions on it
    (the kernel's protected_hardlinks check, ``may_linkat``; Debian's kernels turn it on), and
    each LINK changes them, so a merge's redirect linked under 8 names costs 8 ACCESS, and 1
    with the check off; a removal costs none; a new directory (a checkpoint's data directory)
    costs 2 when the first file is made in it."""
    guest = knfsd_guest.guest
    redirect = "link_all([D / f'm{i}' for i in range(8)], b'redirect', mode=0o444)"
    links = guest.measure(
        LINKS.replace("ROOT", repr("access-links")),
        f"{redirect}\nfor i in range(8): os.unlink(D / f'm{{i}}')",
    ).nfs_ops
    _set_protected_hardlinks(guest, 0)
    try:
        unprotected = guest.measure(LINKS.replace("ROOT", repr("access-off")), redirect).nfs_ops
    finally:
        _set_protected_hardlinks(guest, 1)
    new_dir = guest.measure(
        LINKS.replace("ROOT", repr("access-dir")),
        "os.mkdir(D / 'n'); (D / 'n' / 'f').write_bytes(b'x')",
    ).nfs_ops
    print(
        f"knfsd: link_all of 8 names, then 8 removals {links}; the same links without "
        f"protected_hardlinks {unprotected}; a new directory and a file in it {new_dir}"
    )
    assert links.get("LINK") == 8 and links.get("ACCESS") == 8, links
    assert links.get("REMOVE") == 9, links  # the 8 names and link_all's temporary
    assert unprotected.get("LINK") == 8 and unprotected.get("ACCESS", 0) <= 1, unprotected
    assert new_dir.get("ACCESS") == 2 and new_dir.get("CREATE") == 1, new_dir
