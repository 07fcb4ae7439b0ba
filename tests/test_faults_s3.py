"""The sweep on S3, against a moto server on 127.0.0.1 that the test starts: the endpoint given in the
URI or in ``AWS_ENDPOINT_URL``, a missing bucket refused before Ray starts, and (slow) a driver killed
the moment a trial merged its files, then resumed, with complete rows on S3."""

from __future__ import annotations

import json

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
