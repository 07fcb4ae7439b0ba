"""The sweep lease's compare-and-swap on each store: S3's conditional writes (on the moto server the tests
start, which honours If-None-Match and If-Match on PutObject), a flock on local paths, and
write-wait-read on any other pyarrow filesystem."""

from __future__ import annotations

import socket
import time

import pyarrow.fs as pafs
import pytest
from drivers import BUCKET, s3_fs

import tune.lease as lease_module
from tune.lease import Holder, LocalStore, S3Store, SettleStore, SweepLease, lease_store
from tune.paths import SweepError


def holder(token: str) -> Holder:
    return Holder(token, socket.gethostname(), 1, time.time(), time.time())


@pytest.fixture
def no_settle(monkeypatch):
    """A claim that waited SETTLE_S would hang here: the stores with a compare-and-swap never wait."""
    monkeypatch.setattr(lease_module, "SETTLE_S", 3600.0)


def stores(kind: str, s3: str | None, tmp_path) -> tuple:
    if kind == "s3":
        fs, path = s3_fs(s3), f"{BUCKET}/lease-{tmp_path.name}/sweep-lease.json"
    else:
        fs, path = pafs.LocalFileSystem(), str(tmp_path / "sweep-lease.json")
    return lease_store(fs, path), lease_store(fs, path)


@pytest.mark.parametrize("kind, store_type", [("s3", S3Store), ("local", LocalStore)])
def test_of_two_drivers_that_read_the_same_lease_only_one_swaps_it(kind, store_type, s3, tmp_path,
                                                                   no_settle) -> None:
    a, b = stores(kind, s3 if kind == "s3" else None, tmp_path)
    assert type(a) is store_type
    assert a.read() == (None, None) and b.read() == (None, None)  # both saw no lease
    first = a.swap(None, holder("a"), settle=True)
    assert first is not None
    assert b.swap(None, holder("b"), settle=True) is None  # created in between: refused
    current, version = b.read()
    assert current.token == "a" and version == first
    taken = b.swap(version, holder("b"), settle=True)  # a takeover replaces what it read
    assert taken is not None
    assert a.swap(first, holder("a"), settle=False) is None  # a's heartbeat finds it replaced
    assert a.read()[0].token == "b"
    a.delete(first)  # not a's any more: left alone
    assert a.read()[0].token == "b"
    b.delete(taken)
    assert a.read() == (None, None)


def test_a_held_lease_on_s3_is_refused_taken_over_and_seen_lost(s3, tmp_path, no_settle) -> None:
    fs, folder = s3_fs(s3), f"{BUCKET}/held-{tmp_path.name}"
    lost = []
    first = SweepLease(fs, folder, "s", on_lost=lambda: lost.append(True))
    first.acquire()  # no wait: the conditional write decides
    try:
        with pytest.raises(SweepError, match="being run by another driver"):
            SweepLease(fs, folder, "s").acquire()
        assert first.beat() and not lost  # renewed with If-Match on its own last write
        with SweepLease(fs, folder, "s", takeover=True) as taker:
            assert not first.beat() and lost == [True]
            assert first.lost_to is not None and first.lost_to.token == taker.token
    finally:
        first.release()
    assert first.read() is None  # the taker released it; first deleted nothing of the taker's


def test_other_stores_fall_back_to_write_wait_read(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(lease_module, "SETTLE_S", 0.01)
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())  # neither local nor S3 to the lease
    a, b = lease_store(fs, "sweep-lease.json"), lease_store(fs, "sweep-lease.json")
    assert type(a) is SettleStore
    first = a.swap(None, holder("a"), settle=True)
    assert first == "a" and b.swap(None, holder("b"), settle=True) is None
    assert b.swap("a", holder("b"), settle=True) == "b" and a.swap("a", holder("a"), settle=False) is None
