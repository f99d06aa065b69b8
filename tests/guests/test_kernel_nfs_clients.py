"""The store on real Linux NFS v4.1 clients: three QEMU guests, one nfs-ganesha export.

Every guest is its own kernel NFS client (own attribute, dentry and page caches, own NFSv4
session), mounted with EFS's options, so these tests see what several EC2 hosts sharing one
EFS file system see, which the FUSE simulator (one client) and libnfs cannot show. The guests
are shared by the whole module (tests/fixtures/guests.py); each test works in its own
directory. Test bodies run inside the guests (tests/guests/_bodies.py).
"""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from efsray.testing.guests.vm import EFS_MOUNT_OPTIONS
from tests.fixtures.guests import GuestCluster, GuestDir
from tests.guests import _bodies

pytestmark = pytest.mark.timeout(900)

ROWS = 20


def test_guests_mount_the_export_with_efs_options(nfs_guests: GuestCluster) -> None:
    names = set()
    for guest in nfs_guests.guests:
        out = guest.run(
            "import socket\n"
            "line = [l for l in open('/proc/mounts') if ' /mnt/efs ' in l][0]\n"
            "print(socket.gethostname()); print(line)"
        ).check()
        host, line = out.stdout.splitlines()[:2]
        names.add(host)
        device, _mnt, fstype, options = line.split()[:4]
        assert fstype == "nfs4", line
        opts = dict(o.partition("=")[::2] for o in options.split(","))
        for want in EFS_MOUNT_OPTIONS.split(","):
            key, _, value = want.partition("=")
            assert key in opts, f"{key} missing from {options}"
            if value:
                assert opts[key] == value, f"{key}={opts[key]}, want {value}"
        assert opts["proto"] == "tcp" and device == "10.0.2.2:/export"
    assert len(names) == 3  # three distinct clients (host names feed writer ids)


def test_three_clients_by_four_writers_lose_and_duplicate_nothing(
    nfs_guests: GuestCluster, guest_dir: GuestDir
) -> None:
    """12 writer processes on 3 clients: one series, one model, one results table."""
    root, per = f"{guest_dir.path}/store", 2
    nfs_guests.guests[0].run(f"from efsray.store import Store; Store.init({root!r})").check()
    with ThreadPoolExecutor(3) as pool:
        reports = list(
            pool.map(
                lambda c: nfs_guests.guests[c].call(_bodies.many_writers, root, c, 4, per, ROWS),
                range(3),
            )
        )
    bars = [line.split() for rep in reports for line in rep if line.startswith("bar ")]
    ckpts = [line.split() for rep in reports for line in rep if line.startswith("ckpt ")]
    runs = [line.split() for rep in reports for line in rep if line.startswith("run ")]
    total = 3 * 4 * per
    assert len(bars) == len(ckpts) == len(runs) == total
    # every commit got its own version number, across all clients
    assert sorted(int(v) for _, _, v in bars) == list(range(1, total + 1))
    assert sorted(int(v) for _, _, v in ckpts) == list(range(1, total + 1))
    expected = {b for _, b, _ in bars}
    for guest in nfs_guests.guests:  # every client sees the same, complete state
        seen = guest.call(_bodies.check_everything, root, ROWS)
        assert seen["sorted"], f"{guest.name}: duplicated or unsorted timestamps"
        assert set(seen["batches"]) == expected, f"{guest.name}: a batch is missing or stray"
        assert set(seen["batches"].values()) == {ROWS}, f"{guest.name}: a batch is torn"
        assert seen["rows"] == total * ROWS
        assert seen["versions"] == list(range(total, 0, -1)), "versions have gaps"
        assert seen["appends"] == total
        assert seen["checkpoints"] == {v: who for _, who, v in ckpts}
        assert seen["runs"] == total


def test_writers_killed_at_random_instants_while_another_client_reads(
    nfs_guests: GuestCluster, guest_dir: GuestDir
) -> None:
    a, b, c = nfs_guests.guests
    root = f"{guest_dir.path}/store"
    a.call(_bodies.make_history, root, 1, ROWS, 0)  # B starts from version 1
    reader = b.submit_call(_bodies.read_until_signalled, root, ROWS)
    assert reader.wait_progress() == "ready"
    killed = a.call(_bodies.kill_writers, root, 4, ROWS, 8, 17)
    assert reader.signal(signal.SIGUSR1)
    read = reader.result(timeout=600).value()
    final = c.call(_bodies.check_everything, root, ROWS)
    present = {int(k) for k in final["batches"]}
    print(
        f"SIGKILL test: {len(killed['ok'])} commits of {len(killed['tried'])} tries; reader on B: "
        f"{read['reads']} reads, versions {sorted(set(read['versions']), key=str)}, "
        f"{read['not_found']} not found; final: {len(final['versions'])} versions"
    )
    assert read["problems"] == [], read["problems"]
    assert read["reads"] > 0 and None not in read["versions"], read
    assert read["versions"] == sorted(read["versions"]), "a reader saw versions go backwards"
    assert set(killed["ok"]) <= present, "a committed batch was lost"
    assert present - {0} <= set(killed["tried"]), "a batch nobody wrote appeared"
    assert set(final["batches"].values()) == {ROWS}, "a torn batch was committed"
    assert final["sorted"]
    assert final["versions"] == list(range(len(final["versions"]), 0, -1))


def test_reader_on_one_client_sees_each_commit_of_another_at_once(
    nfs_guests: GuestCluster, guest_dir: GuestDir
) -> None:
    """After an append returns on A, a read that starts on B sees it (close-to-open and the
    store's probe by name), whatever B's attribute and dentry caches hold."""
    a, b, _ = nfs_guests.guests
    root, steps = f"{guest_dir.path}/store", 4
    # B looks for a series before it exists (the kernel caches the absence of a name), then
    # A commits its first version: B's next look must find it.
    assert b.call(_bodies.latest_version, root, "SPY") == 0
    a.call(_bodies.make_history, root, 1, ROWS, 0)
    assert b.call(_bodies.latest_version, root, "SPY") == 1
    writer = a.submit_call(_bodies.step_appender, root, steps, ROWS)
    reader = b.submit_call(_bodies.step_reader, root, steps + 1)
    assert writer.wait_progress() == "ready" and reader.wait_progress() == "ready"
    assert reader.signal(signal.SIGUSR1)
    assert json.loads(reader.wait_progress()) == {"version": 1, "rows": ROWS}
    for k in range(steps):  # B's caches are warm: it read the version before each commit
        assert writer.signal(signal.SIGUSR1)
        version = int(writer.wait_progress())  # A's append has returned
        assert reader.signal(signal.SIGUSR1)
        seen = json.loads(reader.wait_progress())
        assert seen == {"version": version, "rows": ROWS * (k + 2)}, f"step {k}: {seen}"
    writer.result(timeout=300).check()
    reader.result(timeout=300).check()


def test_cleanup_and_prune_on_one_client_while_another_reads_old_versions(
    nfs_guests: GuestCluster, guest_dir: GuestDir
) -> None:
    """A compacts, cleans up and prunes with no grace while B reads version 2 of the series
    and checkpoint v1 (files A deletes under B: ESTALE on a real client). B must get the
    right data or a clean efsray error, never wrong data or a raw OSError."""
    a, b, _ = nfs_guests.guests
    root = f"{guest_dir.path}/store"
    a.call(_bodies.make_history, root, 4, ROWS, 3)
    reader = b.submit_call(_bodies.read_old_versions, root, 2, ROWS, 25.0)
    a.call(_bodies.prune_everything, root, 3)
    seen = reader.result(timeout=600).value()
    print(f"reading old versions during cleanup/prune: {seen['outcomes']}")
    assert seen["wrong"] == []
    raw = {k: n for k, n in seen["outcomes"].items() if ": raw " in k}
    assert raw == {}, f"raw OSErrors reached the reader: {seen['outcomes']}"


def test_close_to_open_and_attribute_cache(nfs_guests: GuestCluster, guest_dir: GuestDir) -> None:
    """What docs/nfs-clients.md states: after A closes a file, an open on B sees every byte
    (close-to-open); a stat on B without an open may report the old size until its cached
    attributes expire (acregmin, 3 s)."""
    a, b, _ = nfs_guests.guests
    path = f"{guest_dir.path}/f"
    a.call(_bodies.write_file, path, "x" * 100)
    writer = a.submit_call(_bodies.append_on_signal, path, "y" * 100)
    assert writer.wait_progress() == "ready"
    observer = b.submit_call(_bodies.observe_change, path, 100)
    assert observer.wait_progress() == "ready"  # B has cached the 100-byte attributes
    assert writer.signal(signal.SIGUSR1)
    assert writer.wait_progress() == "written"  # A's close() returned
    assert observer.signal(signal.SIGUSR1)
    seen = observer.result(timeout=300).value()
    writer.result(timeout=300).check()
    print(f"close-to-open / attribute cache on B: {seen}")
    assert seen["open_size"] == 200, seen  # close-to-open: the open revalidates
    if seen["since_cached"] < 3.0:  # B's attributes were still within acregmin
        assert seen["stat_size"] == 100, seen
    assert seen["stat_after_open"] == 200, seen  # the open refreshed the attribute cache


def test_mountstats_delta_counts_the_clients_own_operations(
    nfs_guests: GuestCluster, guest_dir: GuestDir
) -> None:
    """The runner bench/ uses for the figure of record: a 3 MiB write and close is one OPEN,
    3 WRITEs of wsize (1 MiB) and one CLOSE, as the guest kernel counts them."""
    guest = nfs_guests.guests[2]
    path = f"{guest_dir.path}/three-mib"
    result = guest.measure(
        "data = b'x' * (3 << 20)", f"with open({path!r}, 'wb') as f:\n    f.write(data)"
    )
    ops = result.nfs_ops
    assert ops["OPEN"] == 1 and ops["CLOSE"] == 1, ops
    assert ops["WRITE"] == 3, ops
    assert result.nfs_intervals["WRITE"].retransmissions == 0
    store = f"{guest_dir.path}/store"
    guest.call(_bodies.make_history, store, 3, ROWS, 0)
    tail = guest.measure(
        f"from efsray.store import Store\ns = Store({store!r})", "s.market.tail('SPY', '1m', 10)"
    )
    print(f"tail(10) on a kernel NFS client: {tail.nfs_ops}")  # for the benchmark helper
    assert tail.nfs_ops.get("WRITE", 0) == 0  # a read writes nothing
