"""Malformed input gives clear findings, never a traceback; the parsers hold their properties
on arbitrary input (hypothesis)."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from efsray.compose import Severity, lint_compose_text, lint_path
from efsray.compose.interpolate import interpolate
from efsray.compose.model import _parse_short_port, parse_size, shell_segments
from efsray.compose.render import driver_opts, nfs_options
from efsray.compose.yamlio import load_yaml
from efsray.errors import ConfigError
from efsray.mount.options import RECOMMENDED_OPTIONS

_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcdefg", "bcdefgh", strict=True)
)

MALFORMED: list[tuple[str, str, str]] = [
    ("empty file", "", "YAML004"),
    ("only comments", "# nothing here\n", "YAML004"),
    ("a scalar", "hello\n", "YAML004"),
    ("a list", "- services\n- volumes\n", "YAML004"),
    ("tab indentation", "services:\n\tweb:\n\t\timage: x\n", "YAML001"),
    ("unclosed bracket", "services: {web: {image: [x}\n", "YAML001"),
    ("unclosed quote", 'services:\n  web:\n    image: "x\n', "YAML001"),
    ("duplicate top-level key", "services: {}\nservices: {}\n", "YAML002"),
    ("duplicate service", "services:\n  a: {image: x:1}\n  a: {image: y:1}\n", "YAML002"),
    ("recursive alias", "services: &s\n  a: *s\n", "YAML003"),
    ("billion laughs", _LAUGHS, "YAML003"),
    ("deep nesting", "services: " + "[" * 200 + "]" * 200 + "\n", "YAML003"),
    ("python object tag", "services: !!python/object/apply:os.system [ls]\n", "YAML001"),
    ("two documents", "services: {}\n---\nservices: {}\n", "YAML001"),
    ("NUL character", "services:\x00\n", "YAML001"),
    ("list as a key", "? [a, b]\n: 1\n", "YAML001"),
    ("services is null", "services:\n", "SCHEMA001"),
    ("services is a list", "services:\n  - web\n", "SCHEMA001"),
    ("service is a string", "services:\n  web: nginx\n", "SCHEMA001"),
    ("ports is a string", "services:\n  web: {image: 'n:1', ports: '80:80'}\n", "SCHEMA001"),
    ("port object with junk", "services:\n  web: {image: 'n:1', ports: [{x: 1}]}\n", "SCHEMA001"),
    ("command is a mapping", "services:\n  web: {image: 'n:1', command: {a: 1}}\n", "SCHEMA001"),
    ("environment is a number", "services:\n  w: {image: 'n:1', environment: 5}\n", "SCHEMA001"),
    ("top-level volumes is a list", "services: {}\nvolumes: [a, b]\n", "SCHEMA001"),
    (
        "driver_opts.o is a list",
        "services: {}\nvolumes:\n  v: {driver_opts: {type: nfs, o: [addr=x]}}\n",
        "SCHEMA001",
    ),
    (
        "healthcheck test is a mapping",
        "services:\n  w: {image: 'n:1', healthcheck: {test: {a: 1}}}\n",
        "SCHEMA001",
    ),
    (
        "replicas is a list",
        "services:\n  w: {image: 'n:1', deploy: {replicas: [1]}}\n",
        "SCHEMA001",
    ),
    ("secrets is a mapping", "services:\n  w: {image: 'n:1', secrets: {a: 1}}\n", "SCHEMA001"),
    ("unknown service key", "services:\n  w: {image: 'n:1', imagee: x}\n", "SCHEMA001"),
    ("unknown top-level key", "services: {}\nservice: {}\n", "SCHEMA001"),
    (
        "unbalanced quotes in a ray command",
        "services:\n  w:\n    image: 'n:1'\n    command: bash -c \"ray start --address='x\n",
        "CMP006",
    ),
    (
        "environment list of odd items",
        "services:\n  w: {image: 'n:1', environment: [1, null, {a: b}, '=x', 'A']}\n",
        "SCHEMA001",
    ),
    ("binary scalar", "services:\n  w: {image: !!binary aGVsbG8=}\n", "SCHEMA001"),
    ("bad base64", "services:\n  w: {image: !!binary 'zz'}\n", "YAML001"),
]


@pytest.mark.parametrize(("what", "text", "rule"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_compose_input_gives_a_clear_finding(what, text, rule) -> None:
    report = lint_compose_text(text, f"<{what}>")
    rules = report.rules()
    assert rule in rules, (what, [(f.rule, f.message) for f in report.findings])
    assert "LINT000" not in rules
    assert report.errors >= 1
    for f in report.findings:
        assert f.message and f.why and f.fix and f.rule and f.name
        assert "Traceback" not in f.message
    assert len(MALFORMED) >= 20


def test_oversized_text_is_refused() -> None:
    report = lint_compose_text("x: " + "y" * (3 * 1024 * 1024), "<big>")
    assert report.rules() == {"YAML003"}


def test_unreadable_paths_are_findings(tmp_path: Path) -> None:
    binary = tmp_path / "compose.yml"
    binary.write_bytes(b"services:\n  \xff\xfe: {}\n")
    assert lint_path(binary).rules() == {"FILE001"}
    assert lint_path(tmp_path).rules() == {"FILE001"}  # a directory
    assert lint_path(tmp_path / "missing.yml").rules() == {"FILE001"}
    big = tmp_path / "big.yml"
    big.write_bytes(b"#" * (3 * 1024 * 1024))
    assert lint_path(big).rules() == {"YAML003"}


def test_malformed_env_file_is_findings_not_a_traceback(tmp_path: Path) -> None:
    env = tmp_path / ".env.cloud"
    env.write_text(
        "EFS_DNS_NAME=not a host!\nRAY_HEAD_PORT=abc\n'broken line\nNEON_POOL_MIN_SIZE=50\n"
        "NEON_POOL_MAX_SIZE=5\nNEON_CONNECTION_STRING=mysql://u:hunter2@h/db\n"
    )
    report = lint_path(env)
    messages = " | ".join(f.message for f in report.findings)
    assert report.kind == "env"
    assert "EFS_DNS_NAME" in messages and "RAY_HEAD_PORT" in messages
    assert "NEON_CONNECTION_STRING" in messages
    assert "hunter2" not in messages  # secrets are masked
    assert report.errors >= 3


# --- hypothesis: arbitrary documents never crash a rule -------------------------------------
_INTERESTING = [
    "ray start --head", "ray start --address=h:10001", "127.0.0.1:8265:8265", "8265",
    "${X:-1}", "${Y}", "bash -c 'while true; do sleep 1; done'", "nfs", "addr=x,intr",
    "efs-logs:/logs:ro", "CMD-SHELL", "NONE", "token", "/run/secrets/t", "2gb", ":/x",
]  # fmt: skip
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(_INTERESTING),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), _scalars.filter(bool)), inner, max_size=4),
    ),
    max_leaves=25,
)
_SERVICE_KEYS = [
    "image", "command", "entrypoint", "environment", "ports", "volumes", "healthcheck",
    "deploy", "secrets", "networks", "shm_size", "container_name", "scale", "ipc",
    "network_mode", "restart", "build", "profiles", "depends_on",
]  # fmt: skip
_services = st.dictionaries(
    st.sampled_from(["ray-head", "ray-worker", "efs-monitor", "neon-connector", "x"]),
    st.one_of(_values, st.dictionaries(st.sampled_from(_SERVICE_KEYS), _values, max_size=8)),
    max_size=4,
)
_documents = st.fixed_dictionaries(
    {},
    optional={
        "services": st.one_of(_services, _values),
        "volumes": st.one_of(
            st.dictionaries(
                st.sampled_from(["efs-logs", "v"]),
                st.one_of(
                    _values,
                    st.fixed_dictionaries(
                        {
                            "driver_opts": st.dictionaries(
                                st.sampled_from(["type", "o", "device"]), _values
                            )
                        }
                    ),
                ),
            ),
            _values,
        ),
        "networks": _values,
        "secrets": _values,
        "version": _values,
    },
)


def _dump(doc: Any) -> str | None:
    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents)
def test_any_document_lints_without_crashing(doc: dict[str, Any]) -> None:
    text = _dump(doc)
    if text is None:
        return
    report = lint_compose_text(text, "<hypothesis>")
    assert "LINT000" not in report.rules(), [f.message for f in report.findings]
    for f in report.findings:
        assert isinstance(f.severity, Severity)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_any_text_lints_without_crashing(text: str) -> None:
    report = lint_compose_text(text, "<text>")
    assert "LINT000" not in report.rules()


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.text(alphabet=string.ascii_letters + " -_/", max_size=12),
        ),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.text(alphabet=string.ascii_letters, max_size=8), inner, max_size=4),
        ),
        max_leaves=20,
    )
)
def test_yaml_round_trip(data: Any) -> None:
    assert load_yaml(yaml.safe_dump(data)).data == data


def test_yaml_1_2_scalars_as_compose_reads_them() -> None:
    data = load_yaml("p: [22:22, on, yes, off, 0755, 0o17, 0x1f, 1_0, true, ~, 2024-01-01]").data
    assert data["p"] == ["22:22", "on", "yes", "off", 755, 15, 31, "1_0", True, None, "2024-01-01"]


# --- hypothesis: interpolation, ports, sizes, rendering ------------------------------------
_VAR = st.sampled_from(["A", "B", "EFS_DNS_NAME", "X_1", "_"])
_TEMPLATE = st.lists(
    st.one_of(
        st.text(max_size=6),
        st.sampled_from(["$", "$$", "${", "}", ":-", ":?", "-", "?", ":+", "{"]),
        _VAR.map(lambda v: "$" + v),
        _VAR.map(lambda v: "${" + v),
    ),
    max_size=12,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(_TEMPLATE, st.dictionaries(_VAR, st.text(max_size=8)))
def test_interpolate_never_raises(text: str, env: dict[str, str]) -> None:
    result = interpolate(text, env)
    assert isinstance(result.text, str)
    assert set(result.unknown) <= set(_names(text))


def _names(text: str) -> list[str]:
    from efsray.compose.interpolate import variables

    return list(variables(text))


@settings(max_examples=100, deadline=None)
@given(
    _VAR,
    st.text(alphabet=string.ascii_letters + string.digits + "./:-", max_size=10),
    st.text(alphabet=string.ascii_letters + string.digits + "./:-", max_size=10),
)
def test_interpolate_defaults_and_values(name: str, default: str, value: str) -> None:
    assert interpolate(f"${{{name}:-{default}}}").text == default
    assert interpolate(f"${{{name}:-{default}}}", {name: value}).text == (value or default)
    assert interpolate(f"${{{name}-{default}}}", {name: value}).text == value
    assert interpolate(f"$${name}").text == f"${name}"
    req = interpolate(f"${{{name}:?must be set}}")
    assert req.unknown == (name,) and req.required == (name,)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([None, "127.0.0.1", "0.0.0.0", "::1", "10.1.2.3", "::"]),
    st.one_of(st.none(), st.integers(1, 65535)),
    st.integers(1, 65535),
    st.sampled_from(["", "/tcp", "/udp"]),
)
def test_short_port_syntax(
    host_ip: str | None, published: int | None, target: int, proto: str
) -> None:
    if host_ip is None:
        text = f"{published}:{target}" if published else f"{target}"
    else:
        host = f"[{host_ip}]" if ":" in host_ip else host_ip
        text = f"{host}:{published or ''}:{target}"
    spec = _parse_short_port(text + proto)
    assert spec.host_ip == host_ip
    assert spec.target == str(target)
    assert spec.published == (str(published) if published else None)


@given(
    st.integers(0, 10**6),
    st.sampled_from(["", "k", "m", "g", "K", "M", "G"]),
    st.sampled_from(["", "b", "B"]),
)
def test_parse_size(n: int, unit: str, suffix: str) -> None:
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit.lower()]
    assert parse_size(f"{n}{unit}{suffix if unit else ''}") == n * scale


@given(st.text(max_size=80))
def test_parse_size_and_shell_segments_never_raise(text: str) -> None:
    parse_size(text)
    shell_segments(text)


_LABEL = st.builds(
    lambda a, b: a + b,
    st.sampled_from(string.ascii_lowercase),
    st.text(alphabet=string.ascii_lowercase + string.digits, max_size=8),
)
_HOST = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)


@given(_HOST, st.sampled_from(["/efsray/data", "/x", "/a/b.c/d_e"]))
def test_rendered_options_parse_back(host: str, device: str) -> None:
    opts = driver_opts(host, device)
    assert opts["type"] == "nfs" and opts["device"] == f":{device}"
    assert opts["o"].split(",") == [f"addr={host}", *RECOMMENDED_OPTIONS]


@given(st.text(max_size=40))
def test_render_rejects_bad_input_with_config_errors(text: str) -> None:
    for call in (lambda: nfs_options(text), lambda: driver_opts("fs-1.efs.x.amazonaws.com", text)):
        try:
            call()
        except ConfigError as exc:
            assert str(exc)
