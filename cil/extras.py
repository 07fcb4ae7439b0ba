"""Optional extras of the installed package, and its console scripts.

``pip install cil-sweeps`` alone is the light layer (results and analysis); training needs the
``cil`` extra (torch), sweeps the ``tune`` extra (Ray), trackers their own. A missing optional
package is reported as the ``pip install`` line that adds it, not as a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

DIST = "cil-sweeps"
# Top-level module -> the extra that installs it.
EXTRA_OF = {"torch": "cil", "torchvision": "cil", "sklearn": "cil", "PIL": "cil", "ray": "tune",
            "optuna": "tune", "mlflow": "mlflow", "wandb": "wandb", "tensorboardX": "tensorboard"}


class MissingExtraError(ImportError):
    """An optional package is not installed; the message says which extra provides it."""


def install_hint(module: str, needed_for: str) -> str:
    """``needed_for`` needs ``module``: the message naming the extra (or package) to install."""
    top = module.split(".")[0]
    extra = EXTRA_OF.get(top)
    how = f"pip install '{DIST}[{extra}]'" if extra else f"pip install {top}"
    return f"{needed_for} needs the package {top!r}, which is not installed: {how}"


def require(module: str, needed_for: str) -> None:
    """Raise MissingExtraError with the install hint when ``module`` cannot be imported."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise MissingExtraError(install_hint(module, needed_for))


def _run_cli(module: str, name: str) -> int:
    """Import ``module`` and run its ``main()``; a missing optional package becomes an install hint."""
    try:
        return importlib.import_module(module).main()
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in EXTRA_OF:
            raise
        print(f"error: {install_hint(err.name, name)}", file=sys.stderr)
        return 2


def cil_main() -> int:
    """``cil`` = ``python -m cil``."""
    return _run_cli("cil.cli", "cil")


def sweep_main() -> int:
    """``cil-sweep`` = ``python -m tune``."""
    return _run_cli("tune.cli", "cil-sweep")


def analysis_main() -> int:
    """``cil-analysis`` = ``python -m analysis``."""
    return _run_cli("analysis.cli", "cil-analysis")


def lazy_attributes(module: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports each name of ``where`` (name -> module holding it) on first
    use and keeps it: a package stays light (no torch) until a heavy name is asked for."""

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(where[name]), name)
            setattr(sys.modules[module], name, value)
            return value
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
