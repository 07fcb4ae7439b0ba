"""Ray Tune sweeps over ``cil`` experiments: one YAML spec -> trials -> Parquet rows.

``python -m tune sweep SPEC.yaml`` is the entry point; ``tune.spec`` validates a spec without Ray,
``tune.sweep`` builds and runs the Tuner, ``tune.trainable`` is the function trainable.
"""

from tune.spec import SpecError, SweepSpec, check_capacity, load_spec, parse_spec

__all__ = ["SpecError", "SweepSpec", "check_capacity", "load_spec", "parse_spec"]
