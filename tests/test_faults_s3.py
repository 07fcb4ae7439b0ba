"""The sweep on S3, against a moto server on 127.0.0.1 that the test starts: the endpoint given in the
URI or in ``AWS_ENDPOINT_URL``, a missing bucket refused before Ray starts, and (slow) a driver killed
the moment a trial merged its files, then resumed, with complete rows on S3."""

from __future__ import annotations

import json
import subprocess
import sys

import drivers
import pandas as pd
import pyarrow.fs as pafs
import pytest
import yaml
from drivers import BUCKET, CREDENTIALS, s3_fs
from test_faults import FAST, KEY, ROWS_PER_TRIAL


def _spec(tmp_path) -> str:
    spec = tmp_path / "s3.yaml"
    spec.write_text(yaml.safe_dump({"base": FAST, "grid": {"approach": ["lwf"], "run.seed": [0]},
                                    "resources": {"cpu": 1}}))
    return str(spec)


def _rows(endpoint: str, path: str) -> pd.DataFrame:
    return pd.read_parquet(path, filesystem=s3_fs(endpoint))


def test_missing_bucket_is_one_line_before_ray_starts(s3, tmp_path) -> None:
    done = drivers.run(_spec(tmp_path), "--storage", "s3://no-such-bucket/sweeps", timeout=120,
                       AWS_ENDPOINT_URL=f"http://{s3}", **CREDENTIALS)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write to the sweep storage s3://no-such-bucket")


@pytest.mark.ray
def test_sweep_on_s3_with_the_endpoint_in_the_uri(s3, tmp_path) -> None:
    storage = f"s3://{BUCKET}/uri?endpoint_override={s3}&scheme=http"
    done = drivers.run(_spec(tmp_path), "--storage", storage, "--name", "endpoint", **CREDENTIALS)
    assert done.returncode == 0, done.stderr[-3000:]
    df = _rows(s3, f"{BUCKET}/uri/endpoint/results/task_results")
    assert len(df) == ROWS_PER_TRIAL and not df.duplicated(KEY).any()
    names = [i.base_name for i in s3_fs(s3).get_file_info(pafs.FileSelector(f"{BUCKET}/uri/endpoint"))]
    assert "sweep-lease.json" not in names and "results" in names  # released; no folder named after the query


@pytest.mark.slow
@pytest.mark.ray
def test_driver_killed_at_the_merge_on_s3_resumes_complete(s3, tmp_path) -> None:
    """Case 1 on S3 (endpoint from AWS_ENDPOINT_URL): SIGKILL right after a trial merged, then --resume."""
    args = (_spec(tmp_path), "--storage", f"s3://{BUCKET}/env", "--name", "merge")
    endpoint = {"AWS_ENDPOINT_URL": f"http://{s3}"} | CREDENTIALS
    merged = tmp_path / "merged"
    log = tmp_path / "driver.log"
    driver = drivers.start(log, *args, hooks=True, CIL_TEST_FAULTS=json.dumps({"hang_after_merge": str(merged)}),
                           **endpoint)
    try:
        drivers.wait_for(lambda: merged.exists() and list(merged.iterdir()), driver, log, timeout=240)
    finally:
        drivers.kill_group(driver)
    done = drivers.run(*args, "--resume", **endpoint)
    assert done.returncode == 0, done.stderr[-3000:]
    df = _rows(s3, f"{BUCKET}/env/merge/results/task_results")
    assert len(df) == ROWS_PER_TRIAL and not df.duplicated(KEY).any()


@pytest.mark.slow
@pytest.mark.ray
def test_status_from_another_terminal_shows_the_running_sweep_on_s3(s3, tmp_path) -> None:
    """`python -m tune status` reads the table the driver saves beside Tune's state, on S3 as locally."""
    spec = tmp_path / "long.yaml"
    spec.write_text(yaml.safe_dump({"base": FAST | {"train.nepochs": 40}, "resources": {"cpu": 1},
                                    "grid": {"approach": ["lwf"], "run.seed": [0]}}))
    endpoint = {"AWS_ENDPOINT_URL": f"http://{s3}"} | CREDENTIALS
    sweep = f"s3://{BUCKET}/status/watched"
    log = tmp_path / "driver.log"
    driver = drivers.start(log, str(spec), "--storage", f"s3://{BUCKET}/status", "--name", "watched", **endpoint)
    saved = f"{BUCKET}/status/watched/sweep-status.json"
    try:
        drivers.wait_for(lambda: s3_fs(s3).get_file_info(saved).type == pafs.FileType.File, driver, log)
        shown = status(sweep, endpoint)
    finally:
        drivers.kill_group(driver)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("sweep watched: 0/1 done, ") and lines[1].split()[:3] == ["trial", "approach", "seed"]
    assert lines[2].split()[1:3] == ["lwf", "0"] and lines[2].split()[-1] in ("pending", "running")
    assert f"pid {driver.pid}" in lines[-1] and max(map(len, lines)) <= 120
    missing = status(f"s3://{BUCKET}/status/none", endpoint)
    assert missing.returncode == 2 and "no sweep at s3://" in missing.stderr


def status(sweep: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tune", "status", sweep], cwd=drivers.ROOT, env=drivers.env(**env),
                          capture_output=True, text=True, timeout=120)
