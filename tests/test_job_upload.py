"""What ``ray job submit --working-dir .`` uploads from a fresh clone: Ray's own packaging of a
working_dir (the zip it sends to the cluster) carries the code and presets and leaves results, data,
the virtual environment and the git history out (.gitignore and .rayignore)."""

from __future__ import annotations

import subprocess
import zipfile

import drivers


def test_the_working_dir_upload_carries_code_and_presets_and_leaves_results_and_data_out(tmp_path) -> None:
    from ray._private.runtime_env.packaging import create_package

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", drivers.ROOT, str(clone)], check=True)
    for leftover in ("runs/q/results/task_results/a.parquet", "data/cifar100/x.bin", "results/r.parquet",
                     "report/summary.csv", ".venv/bin/python"):
        (clone / leftover).parent.mkdir(parents=True, exist_ok=True)
        (clone / leftover).write_text("left out")
    package = tmp_path / "upload.zip"
    create_package(str(clone), package, include_gitignore=True)
    names = zipfile.ZipFile(package).namelist()
    assert "tune/presets/quickstart.yaml" in names and "tune/cli.py" in names and "cil/config/__init__.py" in names
    assert "requirements.txt" in names
    for prefix in ("runs/", "data/", "results/", "report/", ".venv/", ".git/"):
        assert not [n for n in names if n.startswith(prefix)], prefix
