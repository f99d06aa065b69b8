"""Read a compose file's YAML safely, the way Compose reads it, and remember line numbers.

Compose parses YAML 1.2 (go-yaml v3); PyYAML speaks YAML 1.1, where ``22:22`` is the integer
1342 and ``on`` is ``True``. The loader here keeps PyYAML's safe constructor (no Python
objects, ever) but resolves plain scalars with YAML 1.2 core rules, rejects duplicate keys as
Compose does, accepts Compose's ``!reset`` and ``!override`` tags, and refuses inputs that are
too big, too deep or whose aliases expand without bound. Every failure is a
:class:`YamlProblem` with a line number, never a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "LoadedYaml", "YamlProblem", "load_yaml"]

MAX_BYTES = 2 * 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


class YamlProblem(Exception):
    """The text is not a YAML document we can lint. ``kind`` names the problem."""

    def __init__(self, kind: str, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.line = line


class _DuplicateKeyError(yaml.MarkedYAMLError):
    pass


# libyaml's parser when PyYAML has it (about 10x faster); the constructor stays the safe one.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):
    """SafeLoader with YAML 1.2 core scalars, duplicate-key errors and Compose's tags."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT, _TIMESTAMP)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found a key that is a list or mapping; keys must be plain values",
                    key_node.start_mark,
                ) from None
            if key in seen:
                raise _DuplicateKeyError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (first at line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: _Loader, node: ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    if text.startswith(("0o", "0x")):
        return int(text, 0)
    return int(text, 10)  # YAML 1.2: a leading zero is not octal


def _construct_compose_tag(loader: _Loader, node: Node) -> Any:
    """``!reset`` / ``!override`` (Compose override files): keep the value as it is."""
    if isinstance(node, MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_Loader.add_constructor(_INT, _construct_int)
_Loader.add_constructor("!reset", _construct_compose_tag)
_Loader.add_constructor("!override", _construct_compose_tag)


@dataclass(frozen=True, slots=True)
class LoadedYaml:
    """The document's data and the line (1-based) where each key or item starts."""

    data: Any
    lines: dict[tuple[Any, ...], int]

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(path[:cut])
            if line is not None:
                return line
        return None


def load_yaml(text: str) -> LoadedYaml:
    """Parse one YAML document. Raises :class:`YamlProblem` on anything unusable."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlProblem("too-large", f"the file is larger than {MAX_BYTES} bytes")
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _DuplicateKeyError as exc:
        raise YamlProblem("duplicate-key", _describe(exc), _line(exc)) from None
    except yaml.MarkedYAMLError as exc:
        raise YamlProblem("syntax", _describe(exc), _line(exc)) from None
    except yaml.YAMLError as exc:  # ReaderError (control characters, bad encoding), ...
        raise YamlProblem("syntax", str(exc).replace("\n", " "), None) from None
    except RecursionError:
        raise YamlProblem("too-deep", "the document nests too deeply to read") from None
    finally:
        if loader is not None:
            loader.dispose()
    _check_shape(data)
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _index(node, (), lines, depth=0)
    return LoadedYaml(data=data, lines=lines)


def _describe(exc: yaml.MarkedYAMLError) -> str:
    parts = [exc.context, exc.problem]
    text = "; ".join(p for p in parts if p)
    return text or str(exc).replace("\n", " ")


def _line(exc: yaml.MarkedYAMLError) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return mark.line + 1 if mark is not None else None


def _check_shape(data: Any) -> None:
    """Refuse recursive structures, alias bombs and absurd nesting before anything walks it."""
    count = 0
    stack: list[tuple[Any, int, frozenset[int]]] = [(data, 0, frozenset())]
    while stack:
        value, depth, parents = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise YamlProblem(
                "too-large",
                f"the document expands to more than {MAX_NODES} values (aliases repeated "
                "too often?)",
            )
        if depth > MAX_DEPTH:
            raise YamlProblem("too-deep", f"the document nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict | list):
            if id(value) in parents:
                raise YamlProblem("recursive", "an alias refers to the value that contains it")
            inner = parents | {id(value)}
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1, inner) for child in children)


def _index(
    node: Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int], depth: int
) -> None:
    if depth > MAX_DEPTH or len(lines) > MAX_NODES:
        return
    lines.setdefault(path, node.start_mark.line + 1)
    for key, child, mark_line in _children(node):
        child_path = (*path, key)
        lines.setdefault(child_path, mark_line)
        _index(child, child_path, lines, depth + 1)


def _children(node: Node) -> Iterator[tuple[Any, Node, int]]:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE:
                yield key_node.value, value_node, key_node.start_mark.line + 1
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            yield i, item, item.start_mark.line + 1
