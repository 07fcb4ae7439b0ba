"""The experiment config: one dataclass tree, validated on construction, with dotted names.

The same dotted names (``loss.lamb``, ``train.lr``, ``data.num_tasks`` ...) are used by the CLI, sweep
YAML, Ray Tune trial configs and Parquet columns, so every config error is caught here, once.
Construction runs: each leaf's type (:mod:`cil.config.coercion`), what the approach and the data set
resolve (:mod:`cil.config.presets`), then every check (:mod:`cil.config.validation`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any

from cil.approaches.registry import APPROACHES, SECTIONS
from cil.config.coercion import convert, flatten, unknown_key_message
from cil.config.presets import SECTION_TYPES, resolve
from cil.config.schema import MACHINE_KEYS, SHARED_SECTIONS
from cil.config.validation import validate
from cil.errors import ConfigError


@dataclass
class _CoreConfig:
    """The approach; :class:`ExperimentConfig` adds the shared sections and one per approach section."""

    approach: str = field(default="lwf", metadata={"check": APPROACHES, "flag": "--approach"})
    """The approach, one of the names in the approaches table; a loss-family preset name (`lwf-s`) also fills the
    `loss.*` weights it leaves unset."""

    def __post_init__(self) -> None:
        self._check_types()
        resolve(self)
        self.data.data_root = os.path.abspath(os.path.expanduser(self.data.data_root))
        if self.data.cache_dir is not None:
            self.data.cache_dir = os.path.abspath(os.path.expanduser(self.data.cache_dir))
        problems = validate(self, tuple(SHARED_SECTIONS))
        if problems:
            raise ConfigError("invalid experiment config:\n  " + "\n  ".join(problems))

    def _check_types(self) -> None:
        """Every leaf's type (also for direct construction), so later checks compare like with like."""
        problems = []
        for key, tp in _LEAVES.items():
            head, _, leaf = key.partition(".")
            owner = getattr(self, head) if leaf else self
            if leaf and not dataclasses.is_dataclass(owner):
                problems.append(f"{head} = {owner!r} has the wrong type: expected {_HINTS[head].__name__}")
                continue
            name = leaf or head
            try:
                setattr(owner, name, convert(key, getattr(owner, name), tp))
            except ConfigError as err:
                problems.append(str(err))
        if problems:
            raise ConfigError("invalid experiment config:\n  " + "\n  ".join(dict.fromkeys(problems)))

    def section(self, name: str) -> Any:
        """The resolved values of an approach section, as the section's declared dataclass
        (``cfg.section("lucir").lamb_mr``); only the running approach's section is filled."""
        values = dataclasses.asdict(getattr(self, name))
        if any(v is None for v in values.values()):
            raise ValueError(f"section {name!r} is not filled: approach {self.approach!r} does not use it")
        return SECTIONS[name](**values)

    # ---- dict round trip -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (JSON/YAML-safe)."""
        return dataclasses.asdict(self)

    def to_flat(self) -> dict[str, Any]:
        """Dotted name -> value for every leaf (the Parquet config columns)."""
        return flatten(self.to_dict())

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Build from a nested dict, a dotted-key dict, or a mix; unknown keys are errors."""
        flat = flatten(values)
        problems = []
        kwargs: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            if key not in _LEAVES:
                problems.append(unknown_key_message(key, _LEAVES))
                continue
            head, _, leaf = key.partition(".")
            try:
                converted = convert(key, value, _LEAVES[key])
            except ConfigError as err:
                problems.append(str(err))
                continue
            if leaf:
                nested.setdefault(head, {})[leaf] = converted
            else:
                kwargs[head] = converted
        if problems:
            raise ConfigError("invalid experiment config:\n  " + "\n  ".join(problems))
        for section, leaves in nested.items():
            kwargs[section] = _HINTS[section](**leaves)
        return ExperimentConfig(**kwargs)

    def replace(self, **dotted: Any) -> ExperimentConfig:
        """A copy with some dotted keys changed (``cfg.replace(**{"loss.lamb": 2})``).

        Every other leaf keeps its value, loss weights and section values filled from a preset
        included: to switch approach, build a new config with ``from_dict`` instead.
        """
        return ExperimentConfig.from_dict(self.to_flat() | dotted)

    def fingerprint(self, device: str | None = None) -> str:
        """Short stable hash of the config; equal configs give equal trial ids. ``device``: the device the
        run resolved (:meth:`resolved_device`), so that ``run.device: auto`` is hashed without importing
        torch; without it, ``auto`` is resolved here."""
        flat = {k: v for k, v in self.to_flat().items() if k not in MACHINE_KEYS}
        kind = self.device_kind(device)
        if kind != "cpu":  # CPU runs keep the ids they had before the kind counted
            flat["device_kind"] = kind
        blob = json.dumps(flat, sort_keys=True, default=str).encode()
        return hashlib.sha1(blob).hexdigest()[:10]

    def device_kind(self, device: str | None = None) -> str:
        """``cpu``, ``cuda`` or ``mps``: the kind of device this config runs on (``auto`` resolved, or
        ``device`` where given), not its index (the same card type at another index computes the same
        numbers)."""
        if self.run.device != "auto":
            return self.run.device.partition(":")[0]
        return (device or self.resolved_device()).partition(":")[0]

    def resolved_device(self) -> str:
        """The device to run on (:func:`cil.device.resolve_device`; imports torch)."""
        from cil.device import resolve_device

        return resolve_device(self.run.device)


ExperimentConfig = dataclasses.make_dataclass(
    "ExperimentConfig",
    [(name, tp, field(default_factory=tp)) for name, tp in (SHARED_SECTIONS | SECTION_TYPES).items()],
    bases=(_CoreConfig,))
ExperimentConfig.__module__ = "cil.config"  # picklable by name: the package exports it
ExperimentConfig.__doc__ = """The whole experiment: the shared sections plus one section per approach that has
hyper-parameters of its own (declared in cil.approaches.registry). Construct with keywords or
:meth:`from_dict`; invalid values raise :class:`ConfigError` before any work starts."""


def valid_keys() -> list[str]:
    """Every dotted config key, in declaration order."""
    return list(_LEAVES)


def leaf_types() -> dict[str, Any]:
    """Every dotted config key's type hint (``float``, ``int | None``, ``list[int]``), in declaration
    order: what the results schema types each config column with."""
    return dict(_LEAVES)


def _collect_leaves() -> tuple[dict[str, Any], dict[str, Any]]:
    hints = typing.get_type_hints(ExperimentConfig)
    leaves: dict[str, Any] = {}
    for f in dataclasses.fields(ExperimentConfig):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            for sub, sub_tp in typing.get_type_hints(tp).items():
                leaves[f"{f.name}.{sub}"] = sub_tp
        else:
            leaves[f.name] = tp
    return leaves, hints


#: dotted key -> its type, in declaration order; section name -> its type
_LEAVES, _HINTS = _collect_leaves()
