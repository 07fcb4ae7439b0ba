"""The project installs as one distribution (cil-sweeps) with the three top-level packages, their data
files, console scripts and extras; requirements.txt's exact pins lie inside pyproject's ranges."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from cil import extras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP_PACKAGES = ("cil", "tune", "analysis")


def pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def tracked_files(folder: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_declares_every_package_and_data_file() -> None:
    cfg = pyproject()
    assert cfg["build-system"]["build-backend"] == "setuptools.build_meta"
    declared = set(cfg["tool"]["setuptools"]["packages"])
    found = {os.path.dirname(p).replace("/", ".") for top in TOP_PACKAGES for p in tracked_files(top)
             if p.endswith("/__init__.py")}
    assert found == declared
    data = cfg["tool"]["setuptools"]["package-data"]
    for top in TOP_PACKAGES:
        for path in tracked_files(top):
            if path.endswith(".py"):
                continue
            package = os.path.dirname(path)
            while package.replace("/", ".") not in declared:
                package = os.path.dirname(package)
            rel = os.path.relpath(path, package)
            patterns = data.get(package.replace("/", "."), [])
            assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{path} is not package data"


def test_console_scripts_resolve_to_the_module_clis() -> None:
    scripts = pyproject()["project"]["scripts"]
    assert set(scripts) == {"cil", "cil-sweep", "cil-analysis"}
    for name, value in scripts.items():
        assert callable(EntryPoint(name, value, "console_scripts").load())


@pytest.mark.parametrize("script, module", [("cil_main", "cil.cli"), ("sweep_main", "tune.cli"),
                                            ("analysis_main", "analysis.cli")])
def test_console_scripts_run_the_module_main(script, module, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit_:
        getattr(extras, script)()
    assert exit_.value.code == 0
    prog = {"cil.cli": "python -m cil", "tune.cli": "python -m tune", "analysis.cli": "python -m analysis"}[module]
    assert capsys.readouterr().out.startswith(f"usage: {prog}")


def test_a_missing_optional_package_is_an_install_hint(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "needs_absent.py").write_text("import absent_tracker_pkg\n\ndef main():\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(extras.EXTRA_OF, "absent_tracker_pkg", "mlflow")
    assert extras._run_cli("needs_absent", "cil-sweep") == 2
    assert capsys.readouterr().err.strip() == (
        "error: cil-sweep needs the package 'absent_tracker_pkg', which is not installed: "
        "pip install 'cil-sweeps[mlflow]'")
    with pytest.raises(extras.MissingExtraError, match=r"pip install 'cil-sweeps\[mlflow\]'"):
        extras.require("absent_tracker_pkg", "tracking.mlflow")


def test_the_analysis_extra_needs_no_torch_or_ray() -> None:
    project = pyproject()["project"]
    light = [Requirement(r).name.lower()
             for r in project["dependencies"] + project["optional-dependencies"]["analysis"]]
    assert not {"torch", "torchvision", "ray", "optuna"} & set(light)
    assert {"pandas", "pyarrow", "scipy", "matplotlib"} <= set(light)


def read_requirements(path: str) -> list[Requirement]:
    """The requirements of a pip requirements file, as pip reads them: comments, blank lines, option
    lines (``--hash``, ``-c``, ``--index-url``), line continuations and markers are all allowed."""
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    reqs = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        line = re.sub(r"\s--hash[=\s]\S+", "", line).strip()
        if line and not line.startswith("-"):
            reqs.append(Requirement(line))
    return reqs


def test_the_requirements_parser_reads_what_pip_reads(tmp_path) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("# header\n\n--extra-index-url x\ntorch==2.14.1 \\\n    --hash=sha256:ab \\\n"
                    "    --hash=sha256:cd\n    # via -r requirements.in\n"
                    "nvidia-nccl-cu13==2.30.7 ; platform_system == \"Linux\"  # via torch\n")
    assert [(r.name, str(r.specifier), str(r.marker)) for r in read_requirements(str(lock))] == [
        ("torch", "==2.14.1", "None"), ("nvidia-nccl-cu13", "==2.30.7", 'platform_system == "Linux"')]


def test_the_lock_pins_every_package_inside_the_declared_ranges() -> None:
    """requirements.txt is the lock (the tested environment, transitively); pyproject's ranges must admit
    every pin, every declared dependency must be locked, and the lock must satisfy requirements.in."""
    project = pyproject()["project"]
    declared: dict[str, list[Requirement]] = {}
    for text in project["dependencies"] + sum(project["optional-dependencies"].values(), []):
        req = Requirement(text)
        if req.name != project["name"]:
            declared.setdefault(canonicalize_name(req.name), []).append(req)
    pins = {canonicalize_name(p.name): p for p in read_requirements(os.path.join(ROOT, "requirements.txt"))}
    for pin in pins.values():
        [spec] = list(pin.specifier)
        assert spec.operator == "==", f"requirements.txt: {pin} is not an exact pin"
        for req in declared.get(canonicalize_name(pin.name), []):
            assert req.specifier.contains(spec.version, prereleases=True), f"{pin} is outside {req}"
    assert set(pins) >= set(declared) - {"wandb"}  # every runtime dependency is locked
    for direct in read_requirements(os.path.join(ROOT, "requirements.in")):
        pin = pins.get(canonicalize_name(direct.name))
        assert pin is not None, f"requirements.in: {direct} is not in the lock; regenerate it"
        assert direct.specifier.contains(next(iter(pin.specifier)).version, prereleases=True), \
            f"the lock's {pin} does not satisfy requirements.in's {direct}; regenerate the lock"


def test_the_lock_says_how_to_regenerate_it() -> None:
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        header = f.read(2000)
    [command] = re.findall(r"^#\s+(pip-compile .*requirements\.in)$", header, flags=re.M)
    for page in ("README.md", "docs/development.md"):
        with open(os.path.join(ROOT, page)) as f:
            assert command in " ".join(f.read().split()), f"{page} does not give the lock's command: {command}"


def _venv(path, system_site: bool) -> str:
    args = [sys.executable, "-m", "venv", str(path)] + (["--system-site-packages"] if system_site else [])
    subprocess.run(args, check=True, timeout=300)
    return os.path.join(str(path), "bin")


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True])
def test_installs_into_a_fresh_venv(tmp_path, editable) -> None:
    """pip install . (or -e .), then the scripts and imports work from another directory."""
    bin_ = _venv(tmp_path / "venv", system_site=True)  # torch and Ray come from this machine's install
    target = ["-e", ROOT] if editable else [ROOT]
    subprocess.run([f"{bin_}/pip", "install", "-q", *target], check=True, timeout=600,
                   cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for script in ("cil", "cil-sweep", "cil-analysis"):
        out = subprocess.run([f"{bin_}/{script}", "--help"], cwd=elsewhere, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0 and out.stdout.startswith("usage:"), out.stderr
    code = "import cil, tune, analysis, os; print(os.path.dirname(tune.__file__))"
    out = subprocess.run([f"{bin_}/python", "-c", code], cwd=elsewhere, capture_output=True, text=True,
                         timeout=300, check=True)
    tune_dir = out.stdout.strip()
    assert tune_dir.startswith(ROOT) == editable
    assert os.path.isfile(os.path.join(tune_dir, "presets", "quickstart.yaml"))
    listed = subprocess.run([f"{bin_}/cil-sweep", "presets"], cwd=elsewhere, capture_output=True, text=True,
                            timeout=300)
    assert listed.returncode == 0 and "quickstart " in listed.stdout, listed.stderr  # presets by name, anywhere


@pytest.mark.slow
def test_the_analysis_extra_alone_reads_results(tmp_path) -> None:
    """An isolated venv with only pip install '.[analysis]' (from the registry): load, summary and a
    figure work and neither torch nor Ray is installed; `cil --help` works and a `cil` run says which
    extra it needs."""
    bin_ = _venv(tmp_path / "venv", system_site=False)
    subprocess.run([f"{bin_}/pip", "install", "-q", f"{ROOT}[analysis]"], check=True, timeout=900, cwd=tmp_path)
    code = ("import importlib.util, sys, tempfile, analysis\n"
            "from analysis.synth import make_results, write_results\n"
            "df = analysis.load(write_results(tempfile.mkdtemp(), *make_results(12, num_tasks=3), files=2))\n"
            "analysis.summary(df, baseline='lwf'); analysis.plot_accuracy(df)\n"
            "print([m for m in ('torch', 'ray') if importlib.util.find_spec(m)])\n")
    out = subprocess.run([f"{bin_}/python", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    out = subprocess.run([f"{bin_}/cil", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("usage:"), out.stderr  # the parser needs no torch
    out = subprocess.run([f"{bin_}/cil", "--nepochs", "1"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2 and "pip install 'cil-sweeps[cil]'" in out.stderr
