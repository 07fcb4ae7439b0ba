"""The arrows of docs/design.md: cil never imports ray; analysis never imports torch or ray."""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("modules, forbidden", [
    ("cil, cil.loop, cil.cli, cil.bench, cil.losses", ("ray",)),
    ("analysis, analysis.cli, analysis.figures, analysis.synth, analysis.bench", ("torch", "ray")),
    ("cil.config, cil.approaches, cil.approaches.registry", ("torch", "ray")),  # the config is torch-free
])
def test_imports_respect_the_layers(modules, forbidden):
    code = (f"import sys\nimport {modules}\n"
            f"print(','.join(m for m in {forbidden!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"{modules} imported {out.stdout.strip()}"


def test_cil_run_stays_the_function_after_the_loop_module_is_imported() -> None:
    """The loop lives in cil.loop, so importing it never replaces the public ``cil.run`` function."""
    code = "import cil.loop, cil.cli, inspect; from cil import run; assert inspect.isgeneratorfunction(run), run"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
