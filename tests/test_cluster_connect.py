"""Connecting to Ray: address checks, auth pass-through, and real connections."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from efsray.cluster import RayAddress, auth_environment, connect, parse_ray_address, probe_tcp
from efsray.config import load_settings
from efsray.errors import ClusterError

ROOT = Path(__file__).resolve().parents[1]

# --- addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "shown"),
    [
        (None, "local", "local"),
        ("", "local", "local"),
        ("local", "local", "local"),
        ("auto", "auto", "auto"),
        ("ray-head:6379", "gcs", "ray-head:6379"),
        (" 10.0.0.5:6380 ", "gcs", "10.0.0.5:6380"),
        ("[::1]:6379", "gcs", "[::1]:6379"),
        ("ray://ray-head", "client", "ray://ray-head:10001"),
        ("ray://ray-head:10001", "client", "ray://ray-head:10001"),
        ("ray://[fe80::1]:10002", "client", "ray://[fe80::1]:10002"),
    ],
)
def test_valid_addresses(text: str | None, kind: str, shown: str) -> None:
    address = parse_ray_address(text)
    assert address.kind == kind
    assert str(address) == shown
    assert parse_ray_address(str(address)) == address


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("ray-head:10001", "10001, the Ray Client port; joining a cluster .* ray-head:6379"),
        ("ray://ray-head:6379", "Ray Client at 6379, the GCS port.*ray://ray-head:10001"),
        ("ray-head:8265", "8265, the dashboard"),
        ("ray://ray-head:8265", "8265, the dashboard"),
        ("http://ray-head:8265", "web URL"),
        ("grpc://ray-head:6379", "scheme 'grpc'"),
        ("ray-head", "has no port; .* ray-head:6379"),
        ("ray-head:", "ends with ':'"),
        ("ray-head:0", "not a number from 1 to 65535"),
        ("ray-head:70000", "not a number from 1 to 65535"),
        ("ray-head:http", "not a number"),
        ("bad_host!:6379", "not a host name"),
        ("::1:6379", "IPv6 host in brackets"),
        ("[::1:6379", "unclosed"),
        ("[nothost]:6379", "not an IPv6 address"),
        ("ray://", "not a host name"),
        ("ray://h/x:10001", "not a host name"),
    ],
)
def test_wrong_addresses_explain_the_right_port(text: str, match: str) -> None:
    with pytest.raises(ClusterError, match=match):
        parse_ray_address(text)


@given(st.text(max_size=40))
def test_any_address_text_parses_or_raises_cluster_error(text: str) -> None:
    try:
        address = parse_ray_address(text)
    except ClusterError as exc:
        assert "Ray address" in str(exc)
        return
    assert isinstance(address, RayAddress)
    assert parse_ray_address(str(address)) == address


@given(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
    st.integers(1, 65535),
    st.booleans(),
)
def test_host_port_round_trip(host: str, port: int, client: bool) -> None:
    text = f"ray://{host}:{port}" if client else f"{host}:{port}"
    try:
        address = parse_ray_address(text)
    except ClusterError as exc:
        assert port in (6379, 8265, 10001) or host.endswith("-") or "-." in host, exc
        return
    assert (address.host, address.port) == (host, port)
    assert str(address) == text


# --- auth settings ------------------------------------------------------------------------


def test_no_auth_settings_join_a_cluster_as_is() -> None:
    assert auth_environment(load_settings(), local=False) == {}


def test_a_local_ray_gets_a_fresh_random_token() -> None:
    a = auth_environment(load_settings(), local=True)
    b = auth_environment(load_settings(), local=True)
    assert a["RAY_AUTH_MODE"] == "token"
    assert len(a["RAY_AUTH_TOKEN"]) == 64 and a["RAY_AUTH_TOKEN"] != b["RAY_AUTH_TOKEN"]


def test_explicitly_disabled_auth_is_respected() -> None:
    env = auth_environment(load_settings(ray_auth_mode="disabled"), local=True)
    assert env == {"RAY_AUTH_MODE": "disabled"}


def test_a_token_implies_token_mode() -> None:
    env = auth_environment(load_settings(ray_auth_token="abc123"), local=False)
    assert env == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "abc123"}


def test_token_file_is_checked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    token = tmp_path / "token"
    with pytest.raises(ClusterError, match="does not exist"):
        auth_environment(load_settings(ray_auth_token_path=token), local=False)
    token.write_text("")
    with pytest.raises(ClusterError, match="is empty"):
        auth_environment(load_settings(ray_auth_token_path=token), local=False)
    with pytest.raises(ClusterError, match="not a regular file"):
        auth_environment(load_settings(ray_auth_token_path=tmp_path), local=False)
    token.write_text("s3cret\n")
    token.chmod(0o644)
    env = auth_environment(load_settings(ray_auth_token_path=token), local=False)
    assert env == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token.resolve())}
    assert "readable by other users" in caplog.text
    assert "s3cret" not in caplog.text


def test_token_mode_without_any_token_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ClusterError, match="no token is configured: set RAY_AUTH_TOKEN"):
        auth_environment(load_settings(ray_auth_mode="token"), local=False)
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("x")
    assert auth_environment(load_settings(ray_auth_mode="token"), local=False) == {
        "RAY_AUTH_MODE": "token"
    }


def test_blank_token_is_refused() -> None:
    with pytest.raises(ClusterError, match="empty or contains whitespace"):
        auth_environment(load_settings(ray_auth_token="a b"), local=False)


# --- TCP probe ------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_probe_refused_port() -> None:
    with pytest.raises(ClusterError, match="connection refused: nothing listens there"):
        probe_tcp("127.0.0.1", _closed_port(), timeout=2)


def test_probe_unknown_host() -> None:
    with pytest.raises(ClusterError, match=r"cannot resolve the Ray head 'no-such-host\.invalid'"):
        probe_tcp("no-such-host.invalid", 6379, timeout=2)


def test_probe_listening_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        probe_tcp("127.0.0.1", s.getsockname()[1], timeout=2)


def test_cli_dead_address_fails_fast_with_a_message() -> None:
    port = _closed_port()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "efsray.cli.app",
            "cluster",
            "info",
            "--address",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.returncode == 5
    assert "connection refused" in proc.stderr and "Traceback" not in proc.stderr


# --- real Ray -------------------------------------------------------------------------------


@pytest.mark.ray
def test_connect_reuses_the_session_connection(ray_cluster) -> None:
    with connect(address=ray_cluster.address) as info:
        assert info.reused and info.nodes == 3 and info.cpus == 3
    import ray

    assert ray.is_initialized()  # a reused connection stays open
    with connect() as info:  # no address: still the session's Ray, not a second one
        assert info.reused and info.nodes == 3


@pytest.mark.ray
def test_connect_refuses_a_second_cluster_in_one_process(ray_cluster) -> None:
    with pytest.raises(ClusterError, match="already connected"), connect(address="10.9.9.9:6390"):
        pass


@pytest.mark.ray
def test_custom_resources_pin_tasks_to_each_node(ray_cluster) -> None:
    import ray

    @ray.remote(num_cpus=0)
    def where() -> str:
        return ray.get_runtime_context().get_node_id()

    for resource, node_id in ray_cluster.node_ids.items():
        assert ray.get(where.options(resources={resource: 1}).remote(), timeout=60) == node_id


@pytest.mark.ray
@pytest.mark.slow
def test_settings_pass_the_token_to_ray(ray_cluster, tmp_path: Path) -> None:
    """Children join the token-protected cluster with the token from an env file, through
    the GCS and through the Ray Client (ray://), and one without the token is refused with
    a message about tokens. The three run at once."""
    gcs = tmp_path / "gcs.env"
    gcs.write_text(f"RAY_ADDRESS={ray_cluster.address}\nRAY_AUTH_TOKEN={ray_cluster.token}\n")
    client = tmp_path / "client.env"
    client.write_text(
        f"RAY_ADDRESS={ray_cluster.client_address}\nRAY_AUTH_TOKEN={ray_cluster.token}\n"
    )
    bad = tmp_path / "bad.env"
    bad.write_text(f"RAY_ADDRESS={ray_cluster.address}\n")
    env = ray_cluster.subprocess_env(with_token=False)
    env["PYTHONPATH"] = str(ROOT / "src")
    cmd = [sys.executable, "-m", "efsray.cli.app", "cluster", "info", "--json", "--env-file"]
    procs = [
        subprocess.Popen([*cmd, str(f)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for f in (gcs, client, bad)
    ]
    outputs = [p.communicate(timeout=150) for p in procs]
    for proc, (out, err), mode in zip(procs[:2], outputs[:2], ("cluster", "client"), strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
        info = json.loads(out)
        assert info["mode"] == mode and info["nodes"] == 3 and info["auth"] == "token"
    assert procs[2].returncode == 5
    message = outputs[2][1].decode()
    assert "token authentication" in message and "RAY_AUTH_TOKEN" in message
    everything = b"".join(out + err for out, err in outputs).decode()
    assert ray_cluster.token not in everything
