"""What a config leaves unset, resolved from the approach and the data set, so that results record real
values: the loss family's preset weights, the approach section's defaults, the exemplar selection, the
grid search's first knob value and the data set's default network. A key of another approach's section,
or a loss key the approach does not use, is an error (FACIL silently ignored such keys)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from typing import Any

from cil.approaches.registry import LOSS_PRESET_KEYS, SECTIONS, SPECS, section_users
from cil.catalog import DATASETS
from cil.errors import ConfigError


def optional_twin(cls: type) -> type:
    """The config tree's view of an approach section: the same leaves, each ``None`` until resolved
    (so a key of another approach's section can be told apart from a default)."""
    hints = typing.get_type_hints(cls)
    fields = [(f.name, hints[f.name] | None, field(default=None, metadata=f.metadata))
              for f in dataclasses.fields(cls)]
    twin = dataclasses.make_dataclass(cls.__name__ + "Values", fields)
    twin.__module__ = "cil.config"  # picklable by name: the package exports every twin
    twin.__doc__ = cls.__doc__
    return twin


#: approach section -> its all-optional view in the config tree
SECTION_TYPES = {name: optional_twin(cls) for name, cls in SECTIONS.items()}
SECTION_DEFAULTS = {name: dataclasses.asdict(cls()) for name, cls in SECTIONS.items()}


def section_hint(section: str | None, name: str) -> str:
    """Where an approach with its own section keeps what ``loss.<name>`` would have set."""
    if section is None:
        return ""
    keys = SECTION_DEFAULTS[section]
    if name in keys:
        return f" (use {section}.{name})"
    return f" (its own keys: {', '.join(f'{section}.{k}' for k in keys)})"


def resolve(cfg: Any) -> None:
    """Fill what ``cfg`` leaves to its approach's preset and its data set (in place); ConfigError naming
    every key set for an approach that does not use it."""
    if cfg.model.network is None:
        row = DATASETS.get(cfg.data.dataset.partition(":")[0])
        cfg.model.network = None if row is None else row.network  # an unknown data set has its own error
    spec = SPECS.get(cfg.approach)
    if spec is None:
        return  # reported by the validation
    if cfg.memory.selection is None:
        cfg.memory.selection = spec.selection
    problems = []
    for name in LOSS_PRESET_KEYS:
        value = getattr(cfg.loss, name)
        if name not in spec.loss:
            if value is not None:
                problems.append(f"loss.{name} = {value!r} is set but approach {cfg.approach!r} "
                                f"does not use it{section_hint(spec.section, name)}")
        elif value is None:
            setattr(cfg.loss, name, float(spec.loss[name]))
    if spec.stability is None and cfg.gridsearch.knob_start is not None:
        with_knob = ", ".join(s.name for s in SPECS.values() if s.stability is not None)
        problems.append(f"gridsearch.knob_start = {cfg.gridsearch.knob_start!r} is set but approach "
                        f"{cfg.approach!r} has no stability knob (its grid search picks the lr only); "
                        f"approaches with one: {with_knob}")
    elif spec.stability is not None and cfg.gridsearch.knob_start is None:
        cfg.gridsearch.knob_start = float(spec.stability.start)
    for section in SECTIONS:
        values = getattr(cfg, section)
        if section == spec.section:
            for f in dataclasses.fields(values):
                if getattr(values, f.name) is None:
                    setattr(values, f.name, SECTION_DEFAULTS[section][f.name])
            continue
        for f in dataclasses.fields(values):
            if getattr(values, f.name) is not None:
                owners = ", ".join(section_users(section))
                problems.append(f"{section}.{f.name} is set but approach is {cfg.approach!r} "
                                f"({section}.* belongs to {owners})")
    if problems:
        raise ConfigError("invalid experiment config:\n  " + "\n  ".join(problems))
