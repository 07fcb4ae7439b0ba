"""Session-wide test setup: the decoded-image cache of every test run lives in a fresh temporary folder.

Set here, before any test runs, so that in-process runs and the Ray workers tests start (they inherit the
environment) never read or write the user's ``~/.cache/cil/decoded``.
"""

import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix="cil-test-cache-")
os.environ["CIL_CACHE_DIR"] = _CACHE


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)
