"""From what a user wrote to typed leaves: dotted and nested keys, each value checked against its field's
type (ints where floats are expected, never bools as numbers), unknown keys with the closest valid ones."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

import yaml

from cil.approaches.registry import SECTIONS
from cil.config.schema import SHARED_SECTIONS
from cil.errors import ConfigError

#: every section name of the config tree (shared and per approach)
SECTION_NAMES = frozenset((*SHARED_SECTIONS, *SECTIONS))


def assignments(items: Iterable[str], flag: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` command-line items -> dotted keys and YAML-parsed values (the one parser behind every
    ``--set``: ``python -m cil``, ``python -m tune sweep`` and both ``verify`` commands); raises ConfigError."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r} is not valid: use {flag} KEY=VALUE, e.g. {flag} loss.lamb=2")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"{flag} {item!r}: the value is not valid YAML ({err})") from None
    return out


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys. Keys that are already dotted pass through."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {key!r}")
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name in SECTION_NAMES:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def base_type(tp: Any) -> tuple[Any, bool]:
    """A leaf's type without ``| None``, and whether None is allowed."""
    args = typing.get_args(tp)
    optional = (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args
    return (next((a for a in args if a is not type(None)), tp) if optional else tp), optional


def convert(key: str, value: Any, tp: Any) -> Any:
    """Check one leaf's type; ints are accepted where floats are expected, bools never as numbers."""
    base, optional = base_type(tp)
    if typing.get_origin(base) in (typing.Union, types.UnionType):  # int | str: the first arm that takes it
        for arm in typing.get_args(base):
            try:
                return convert(key, value, arm)
            except ConfigError:
                pass
        raise ConfigError(f"{key} = {value!r} has the wrong type: expected "
                          f"{' or '.join(type_name(a) for a in typing.get_args(tp))}")
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} = None is not valid: expected {type_name(base)}")
    if typing.get_origin(base) is list:
        item = typing.get_args(base)[0]
        if isinstance(value, list | tuple):
            try:
                return [convert(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
            except ConfigError:
                pass
        raise ConfigError(f"{key} = {value!r} has the wrong type: expected a list of {item.__name__}")
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif base is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif base is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key} = {value!r} has the wrong type: expected {base.__name__}"
                      + (" or null" if optional else ""))


def unknown_key_message(key: str, leaves: Iterable[str]) -> str:
    """An unknown key, with the keys it may have meant."""
    leaves = list(leaves)
    same_leaf = [k for k in leaves if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
    if "." in key or not same_leaf:
        close = difflib.get_close_matches(key, leaves, n=3, cutoff=0.5) or same_leaf
    else:  # a leaf without its section ("lamb"): every section that has it, in declaration order
        close = same_leaf
    if close:
        return f"unknown config key {key!r}; did you mean {', '.join(repr(c) for c in close)}?"
    return f"unknown config key {key!r} (valid keys: {', '.join(leaves)})"
