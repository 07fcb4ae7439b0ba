"""Session-wide test setup: the decoded-image cache of every test run lives in a fresh temporary folder.

Set here, before any test runs, so that in-process runs and the Ray workers tests start (they inherit the
environment) never read or write the user's ``~/.cache/cil/decoded``. And the S3 server fixture that
the S3 tests share.
"""

import os
import shutil
import tempfile

import drivers
import pytest

from cil.config import RunConfig
from cil.numerics import startup_env

_CACHE = tempfile.mkdtemp(prefix="cil-test-cache-")
os.environ["CIL_CACHE_DIR"] = _CACHE
# Tests run torch operations of their own before in-process runs: fix the default CPU mode's code paths
# (run.cpu_isa) at the start, as a notebook would (docs/reproducibility.md).
os.environ.update(startup_env(RunConfig().cpu_isa))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free port of 127.0.0.1 with the bucket ``drivers.BUCKET``; yields its
    endpoint host:port."""
    pytest.importorskip("moto.server")
    import boto3
    from moto.server import ThreadedMotoServer

    port = drivers.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        c = drivers.CREDENTIALS
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name=c["AWS_DEFAULT_REGION"],
                     aws_access_key_id=c["AWS_ACCESS_KEY_ID"], aws_secret_access_key=c["AWS_SECRET_ACCESS_KEY"]
                     ).create_bucket(Bucket=drivers.BUCKET)
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()
