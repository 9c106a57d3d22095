"""Typed stage configs: YAML files plus dotted `key=value` overrides, checked against dataclasses.

Every stage declares one dataclass (nested dataclasses for sections). Loading is strict where the
anchors are lax: an unknown key is an error naming the key and the nearest valid one, a value of the
wrong type is an error naming the key, the expected type and the value given. Free-form sections
(`training:` for TRL/transformers arguments) are typed `dict` and checked by the stage against the
library's own config class, so TRL stays the single source of truth for its arguments.

Field documentation lives once, as a docstring line under each field; `describe` reads it back for
`align <stage> --help`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from align.core.errors import AlignError, nearest


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-4` (no dot) as a string; every ML config means a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None):
    """Build a `cls` instance from a YAML file (optional) and `key=value` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path)
    for item in overrides or []:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    return build(cls, data)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AlignError(f"config file not found: {path} (give an existing YAML file, e.g. one under configs/)")
    try:
        data = yaml_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AlignError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AlignError(f"{path}: a config must be a YAML mapping of keys to values, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """`a.b=3` -> ("a.b", 3). Values are parsed as YAML scalars, so `true`, `1e-4`, `[1,2]` work."""
    if "=" not in item:
        raise AlignError(f"override '{item}' is not key=value (example: training.learning_rate=1e-4)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise AlignError(f"override '{item}' has an empty key")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def build(cls: type, data: dict[str, Any], prefix: str = ""):
    """Construct dataclass `cls` from a mapping, strictly."""
    if not isinstance(data, dict):
        raise AlignError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise AlignError(f"unknown config key '{prefix}{key}'{nearest(str(key), fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = coerce(hints[name], value, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field left out
        raise AlignError(f"config '{prefix.rstrip('.') or cls.__name__}': {exc}") from None


def coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; convert only where lossless (int -> float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, key)
            except AlignError as exc:
                errors.append(str(exc))
        raise AlignError(errors[0] if len(errors) == 1 else f"'{key}': {value!r} matches none of {type_name(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = nearest(str(value), [str(c) for c in choices])
            raise AlignError(f"'{key}' must be one of {', '.join(map(str, choices))}; got {value!r}{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value if value is not None else {}, prefix=f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            # A single string where a list is expected is a common, unambiguous shorthand.
            if isinstance(value, str):
                value = [value]
            else:
                raise AlignError(f"'{key}' must be a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise AlignError(f"'{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise AlignError(f"'{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AlignError(f"'{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AlignError(f"'{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. `name=2024` on the command line
        if not isinstance(value, str):
            raise AlignError(f"'{key}' must be a string, got {value!r}")
        return value
    return value


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "|".join(map(str, typing.get_args(tp)))
    if dataclasses.is_dataclass(tp):
        return "section"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data, for manifests and `config.yaml` in run directories."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal right under a field) of a dataclass."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # base classes first, so a subclass can re-document a field
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                    if isinstance(nxt.value.value, str):
                        docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per key: `name (type, default): doc`, nested sections flattened with dots."""
    lines = []
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(f"{prefix}{f.name}: {docs.get(f.name, '')}".rstrip(": "))
            lines.extend(describe(tp, prefix=f"{prefix}{f.name}."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "required"
        lines.append(f"{prefix}{f.name} ({type_name(tp)}, default {default!r}): {docs.get(f.name, '')}")
    return lines


def check_passthrough(section: dict[str, Any], target: type, key: str, reserved: set[str] = frozenset()) -> None:
    """Check a free-form section (e.g. `training:`) against the dataclass it is passed to.

    `reserved` are arguments the stage sets itself (output_dir, ...); setting them is an error rather
    than being silently overridden.
    """
    valid = {f.name for f in dataclasses.fields(target)}
    for name in section:
        if name in reserved:
            raise AlignError(f"'{key}.{name}' is set by align itself and cannot be overridden here")
        if name not in valid:
            raise AlignError(f"unknown config key '{key}.{name}' for {target.__name__}{nearest(name, valid)}")
