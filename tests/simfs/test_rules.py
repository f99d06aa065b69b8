"""The simulator's parsers, validators and bookkeeping, without FUSE."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from efsray.cli.simulate import _parse_latency
from efsray.errors import ConfigError
from efsray.simfs import (
    FAULT_ERRNOS,
    OP_KINDS,
    PROFILES,
    FaultRule,
    HangRule,
    SimFSConfig,
    default_control_path,
    fuse_unavailable_reason,
    get_profile,
)
from efsray.simfs.board import OpBoard
from efsray.simfs.control import OpCounters, check_socket_path
from efsray.simfs.faults import parse_ops
from efsray.simfs.mounts import _unescape

ops_sets = st.one_of(st.none(), st.frozensets(st.sampled_from(sorted(OP_KINDS)), min_size=1))
patterns = st.text(min_size=1, max_size=40).filter(lambda s: "\0" not in s)
counts = st.integers(min_value=1, max_value=10**6)

fault_rules = st.builds(
    FaultRule,
    error=st.sampled_from(sorted(FAULT_ERRNOS)),
    ops=ops_sets,
    path=patterns,
    nth=counts,
    probability=st.one_of(st.none(), st.floats(min_value=1e-6, max_value=1.0)),
    times=st.one_of(st.none(), counts),
)


@given(fault_rules)
def test_fault_rule_json_round_trip(rule: FaultRule) -> None:
    assert FaultRule.from_dict(rule.to_dict()) == rule


@given(st.builds(HangRule, ops=ops_sets, path=patterns, nth=counts))
def test_hang_rule_json_round_trip(rule: HangRule) -> None:
    assert HangRule.from_dict(rule.to_dict()) == rule


@given(st.dictionaries(st.text(max_size=12), st.none() | st.integers() | st.text(max_size=8)))
def test_fault_rule_parser_accepts_only_valid_rules(data: dict) -> None:
    try:
        rule = FaultRule.from_dict(data)
    except ConfigError:
        return
    assert rule.error in FAULT_ERRNOS
    assert rule.nth >= 1


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"error": "ENOSYS"},
        {"error": "EIO", "nth": 0},
        {"error": "EIO", "nth": True},
        {"error": "EIO", "times": 0},
        {"error": "EIO", "probability": 0},
        {"error": "EIO", "probability": 1.5},
        {"error": "EIO", "probability": float("nan")},
        {"error": "EIO", "ops": ["write", "frobnicate"]},
        {"error": "EIO", "ops": []},
        {"error": "EIO", "path": ""},
        {"error": "EIO", "path": "a\0b"},
        {"error": "EIO", "colour": "red"},
        {"error": 5},
    ],
)
def test_fault_rule_parser_rejects(data: dict) -> None:
    with pytest.raises(ConfigError):
        FaultRule.from_dict(data)


def test_parse_ops_forms() -> None:
    assert parse_ops(None) is None
    assert parse_ops("*") is None
    assert parse_ops("all") is None
    assert parse_ops("write, fsync") == frozenset({"write", "fsync"})
    assert parse_ops(["rename"]) == frozenset({"rename"})
    with pytest.raises(ConfigError, match="unknown operation kind"):
        parse_ops("write,lookup")


def test_profiles_are_valid_and_ordered() -> None:
    gp, maxio, none = PROFILES["efs-gp"], PROFILES["efs-maxio"], PROFILES["none"]
    assert gp.write == pytest.approx(0.0027)
    assert 0.0005 <= gp.read <= 0.001
    for op in OP_KINDS:
        assert maxio.base_delay(op) >= gp.base_delay(op) >= none.base_delay(op) == 0
    assert gp.base_delay("release") == 0  # asynchronous in the kernel
    assert gp.base_delay("readdir", entries=1000) == pytest.approx(8 * gp.readdir)


@given(
    base=st.floats(min_value=0, max_value=1),
    jitter=st.floats(min_value=0, max_value=1),
    seed=st.integers(),
)
def test_jitter_stays_within_its_band(base: float, jitter: float, seed: int) -> None:
    profile = get_profile("none", write=base, jitter=jitter)
    delay = profile.delay("write", random.Random(seed))
    assert base * (1 - jitter) - 1e-12 <= delay <= base * (1 + jitter) + 1e-12


@pytest.mark.parametrize(
    "overrides",
    [{"write": -1}, {"read": float("inf")}, {"jitter": 2}, {"speed": 1}, {"write": "fast"}],
)
def test_profile_overrides_are_validated(overrides: dict) -> None:
    with pytest.raises(ConfigError):
        get_profile("efs-gp", **overrides)


def test_unknown_profile_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="efs-gp, efs-maxio, none"):
        get_profile("efs-fast")


@given(st.lists(st.tuples(st.sampled_from(["read", "write"]), st.integers(0, 10**6)), max_size=4))
def test_cli_latency_parser(items: list[tuple[str, int]]) -> None:
    parsed = _parse_latency([f"{k}={v}ms" for k, v in items])
    for key, value in dict(items).items():
        assert parsed[key] == pytest.approx(value / 1000)


@pytest.mark.parametrize("bad", ["write", "write=", "write=fast", "=3"])
def test_cli_latency_parser_rejects(bad: str) -> None:
    with pytest.raises(ConfigError, match="NAME=SECONDS"):
        _parse_latency([bad])


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_mountinfo_unescape_inverts_the_kernel_escaping(path: str) -> None:
    escaped = "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)
    assert _unescape(escaped) == path


def test_config_validation(tmp_path) -> None:
    with pytest.raises(ConfigError):
        SimFSConfig(mountpoint=tmp_path, backing=tmp_path, attr_timeout=-1)
    with pytest.raises(ConfigError):
        SimFSConfig(mountpoint=tmp_path, backing=tmp_path, seed="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown latency"):
        SimFSConfig(mountpoint=tmp_path, backing=tmp_path, latency={"lookup": 1})
    nested = tmp_path / "inner"
    nested.mkdir()
    with pytest.raises(ConfigError, match="must not contain each other"):
        SimFSConfig(mountpoint=nested, backing=tmp_path).check_paths()
    with pytest.raises(ConfigError, match="not a directory"):
        SimFSConfig(mountpoint=tmp_path / "missing", backing=tmp_path).check_paths()
    config = SimFSConfig(mountpoint=nested, backing=tmp_path / "b", profile="efs-gp", seed=3)
    assert SimFSConfig.from_dict(config.to_dict()) == config


def test_default_control_path_is_short_and_outside_the_mount(tmp_path) -> None:
    deep = tmp_path.joinpath(*["d" * 50] * 10)
    path = default_control_path(deep)
    assert check_socket_path(path) == path
    assert not path.is_relative_to(deep)
    assert default_control_path(deep) == path != default_control_path(tmp_path)
    with pytest.raises(ConfigError, match="longer than"):
        check_socket_path(deep / "control.sock")


def test_unavailable_reasons_name_the_missing_piece(tmp_path) -> None:
    reason = fuse_unavailable_reason(device=str(tmp_path / "fuse"))
    assert reason is not None and "does not exist" in reason
    not_rw = tmp_path / "fuse-ro"
    not_rw.touch(mode=0o000)
    if fuse_unavailable_reason(device=str(not_rw)) is not None:  # root can open anything
        assert "readable and writable" in str(fuse_unavailable_reason(device=str(not_rw)))
    existing = tmp_path / "dev"
    existing.touch()
    reason = fuse_unavailable_reason(device=str(existing), fusermount="no-such-fusermount3")
    assert reason == "no-such-fusermount3 is not installed: apt-get install fuse3"


# --- the board: counting, nth/times/probability semantics, hangs (real threads) ---------


def test_nth_fault_fires_once_on_the_nth_match_only() -> None:
    board = OpBoard(PROFILES["none"])
    board.arm_fault(FaultRule(error="EIO", ops=frozenset({"write"}), path="/a/*", nth=3))
    outcomes = []
    for path in ["/a/1", "/b/1", "/a/2", "/a/3", "/a/4"]:
        try:
            board.enter("write", path)
            outcomes.append("ok")
        except OSError as exc:
            outcomes.append(exc.errno)
        board.enter("read", path)  # never matches
    assert outcomes == ["ok", "ok", "ok", FAULT_ERRNOS["EIO"], "ok"]
    snap = board.counters()
    assert snap["ops"] == {"read": 5, "write": 5}
    assert snap["faults_injected"] == {"write:EIO": 1}


def test_persistent_fault_and_rename_matches_either_path() -> None:
    board = OpBoard(PROFILES["none"])
    board.arm_fault(FaultRule(error="ENOSPC", path="/full/*", nth=2, times=None))
    results = []
    for _ in range(4):
        try:
            board.enter("rename", "/tmp/x", "/full/x")
            results.append(0)
        except OSError as exc:
            results.append(exc.errno)
    assert results == [0, FAULT_ERRNOS["ENOSPC"], FAULT_ERRNOS["ENOSPC"], FAULT_ERRNOS["ENOSPC"]]
    assert board.clear_faults() == 1
    board.enter("rename", "/tmp/x", "/full/x")


def test_probability_faults_are_reproducible_with_a_seed() -> None:
    def run(seed: int) -> list[bool]:
        board = OpBoard(PROFILES["none"], seed=seed)
        board.arm_fault(FaultRule(error="ESTALE", probability=0.3, times=None))
        fired = []
        for _ in range(300):
            try:
                board.enter("getattr", "/x")
                fired.append(False)
            except OSError:
                fired.append(True)
        return fired

    first = run(7)
    assert first == run(7)
    assert 40 < sum(first) < 140


def test_counters_reset_is_atomic_with_the_read() -> None:
    board = OpBoard(PROFILES["none"])
    board.enter("write", "/x")
    board.add_bytes(written=10)
    before = board.counters(reset=True)
    assert before["ops"] == {"write": 1} and before["bytes_written"] == 10
    assert OpCounters.from_dict(board.counters()).total() == 0


def test_hang_blocks_until_release_and_then_lets_everything_go() -> None:
    board = OpBoard(PROFILES["none"])
    board.arm_hang(HangRule(ops=frozenset({"fsync"}), nth=2))
    board.enter("fsync", "/x")  # the first one passes: nth=2
    done = threading.Event()

    def worker() -> None:
        board.enter("fsync", "/x")
        done.set()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    assert board.wait_hung(3, timeout=10) == 3
    assert not done.is_set()
    board.enter("write", "/x")  # other kinds are not held
    assert board.release() == 3
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive()
    assert board.wait_hung(1, timeout=0) == 0
    board.enter("fsync", "/x")  # released means disarmed


def test_close_releases_and_disables_hangs() -> None:
    board = OpBoard(PROFILES["none"])
    board.arm_hang(HangRule())
    thread = threading.Thread(target=board.enter, args=("getattr", "/"))
    thread.start()
    assert board.wait_hung(1, timeout=10) == 1
    board.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    board.arm_hang(HangRule())
    board.enter("getattr", "/")  # closed: never blocks again
