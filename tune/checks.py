"""Checks a sweep makes before Ray starts: each distinct data source of its trials."""

from __future__ import annotations

from cil.config import ExperimentConfig
from cil.data import DataError
from cil.data.check import check_data_source
from tune.spec import SweepSpec, _points

DataSource = tuple[str, str, int | None, bool]


def data_sources(spec: SweepSpec) -> list[DataSource]:
    """The distinct (dataset, data_root, image_size, fixed_class_order) of the spec's trials (search
    mode: of every choice and bound of its space)."""
    sources: dict[DataSource, None] = {}
    for point in _points(spec.grid, spec.search):
        flat = {k: v for k, v in (spec.base | point).items() if not k.startswith("_")}
        d = ExperimentConfig.from_dict(flat).data
        sources[(d.dataset, d.data_root, d.image_size, d.fixed_class_order)] = None
    return list(sources)


def check_data(spec: SweepSpec) -> list[str]:
    """One message per data source that a trial could not use."""
    problems = []
    for dataset, root, image_size, fixed_order in data_sources(spec):
        try:
            check_data_source(dataset, root, image_size=image_size, fixed_class_order=fixed_order)
        except DataError as err:
            problems.append(f"data.dataset {dataset!r} (data.data_root {root!r}): {err}")
    return problems
