"""One driver per sweep: a lease file with a heartbeat in ``<storage>/<name>/``.

A driver reads the lease, refuses if someone else holds it and is alive, otherwise swaps in its own (a
random token): the write succeeds only if the lease is still what it read (absent, or the stale holder
it read). The holder rewrites the lease every ``HEARTBEAT_S`` the same way, expecting its own last
write; if the swap fails (a ``--takeover`` replaced it), it stops its sweep. A lease is stale, and may be
taken without ``--takeover``, when its heartbeat is older than ``STALE_S`` or its holder ran on this
host and that process is gone.

The swap uses each storage's own atomic operation (docs/reliability.md says which store gets which):

- local paths: read, compare and write under an exclusive ``fcntl.flock`` of the sweep folder;
- S3 (with boto3 installed): conditional writes, ``If-None-Match: *`` to create and ``If-Match: <ETag>``
  to replace (pyarrow's S3 filesystem cannot send them);
- any other store (GCS through pyarrow, which sends no generation precondition; S3 without boto3):
  write, wait ``SETTLE_S``, read back: of two drivers that raced, only the one whose write landed last
  still finds its token (read-after-write consistency, which every store has).
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow.fs as pafs

from tune.paths import SweepError

LEASE_FILE = "sweep-lease.json"
HEARTBEAT_S = 15.0
STALE_S = 90.0
SETTLE_S = 2.0


@dataclass(frozen=True)
class Holder:
    """Who holds a sweep, as written in its lease file."""

    token: str
    host: str
    pid: int
    started: float
    heartbeat: float

    def describe(self) -> str:
        started = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (f"host {self.host}, pid {self.pid}, started {started}, last heartbeat "
                f"{max(0.0, time.time() - self.heartbeat):.0f} s ago")

    def stale(self) -> bool:
        if time.time() - self.heartbeat > STALE_S:
            return True
        return self.host == socket.gethostname() and not _alive(self.pid)


# What a store returns with a lease it read, and expects back to replace it: None when there was none.
Version = Any


def _parse(path: str, data: bytes) -> Holder:
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError) as err:
        raise SweepError(f"cannot read the sweep lease {path}: {err}") from None


def _encode(holder: Holder) -> bytes:
    return json.dumps(asdict(holder)).encode()


class SettleStore:
    """Write, wait, read back: for stores without a compare-and-swap that pyarrow can reach."""

    def __init__(self, fs: pafs.FileSystem, path: str) -> None:
        self.fs, self.path = fs, path

    def read(self) -> tuple[Holder | None, Version]:
        try:
            with self.fs.open_input_stream(self.path) as f:
                data = f.read()
        except FileNotFoundError:
            return None, None
        except OSError as err:
            if self.fs.get_file_info(self.path).type == pafs.FileType.NotFound:
                return None, None
            raise SweepError(f"cannot read the sweep lease {self.path}: {err}") from None
        holder = _parse(self.path, data)
        return holder, holder.token

    def swap(self, expected: Version, holder: Holder, settle: bool) -> Version | None:
        """Write ``holder`` if the lease is still ``expected``; its new version, or None if it was not.
        ``settle``: a claim, not a renewal: wait and read back, the last write wins."""
        if self.read()[1] != expected:
            return None
        with self.fs.open_output_stream(self.path) as out:
            out.write(_encode(holder))
        if settle:
            time.sleep(SETTLE_S)
            if self.read()[1] != holder.token:
                return None
        return holder.token

    def delete(self, expected: Version) -> None:
        if self.read()[1] == expected:
            self.fs.delete_file(self.path)


class LocalStore(SettleStore):
    """A local (or mounted) path: the read-compare-write runs under an exclusive ``flock`` of the folder."""

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        folder = os.path.dirname(self.path)
        os.makedirs(folder, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)  # the sweep folder itself: no lock file is left behind
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def swap(self, expected: Version, holder: Holder, settle: bool) -> Version | None:
        with self._locked():
            if self.read()[1] != expected:
                return None
            tmp = f"{self.path}.{holder.token}.tmp"
            with open(tmp, "wb") as out:
                out.write(_encode(holder))
            os.replace(tmp, self.path)  # readers outside the lock never see half a lease
        return holder.token

    def delete(self, expected: Version) -> None:
        with self._locked():
            super().delete(expected)


class S3Store:
    """S3's conditional writes: create with ``If-None-Match: *``, replace with ``If-Match: <ETag>``."""

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.path = f"s3://{bucket}/{key}"

    def read(self) -> tuple[Holder | None, Version]:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None, None
        except Exception as err:  # botocore's errors: no network, no permission
            raise SweepError(f"cannot read the sweep lease {self.path}: {err}") from None
        return _parse(self.path, got["Body"].read()), got["ETag"]

    def swap(self, expected: Version, holder: Holder, settle: bool) -> Version | None:
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=_encode(holder), **condition)["ETag"]
        except Exception as err:
            code = getattr(err, "response", {}).get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):  # 412, or 409 for a concurrent one
                return None
            raise OSError(f"cannot write the sweep lease {self.path}: {err}") from err

    def delete(self, expected: Version) -> None:
        if self.read()[1] == expected:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)


def lease_store(fs: pafs.FileSystem, path: str) -> SettleStore | S3Store:
    """The lease's store at ``path`` in ``fs``: the storage's own compare-and-swap where this process can
    use one, else write-wait-read."""
    if isinstance(fs, pafs.LocalFileSystem):
        return LocalStore(fs, path)
    if isinstance(fs, pafs.S3FileSystem):
        client = _s3_client(fs)
        if client is not None:
            bucket, _, key = path.lstrip("/").partition("/")
            return S3Store(client, bucket, key)
    return SettleStore(fs, path)


def _s3_client(fs: pafs.S3FileSystem) -> Any:
    """A boto3 client with the filesystem's endpoint, region and credentials (its pickled options), or
    None without boto3 or for an assumed role (boto3 would need the role's session set up again)."""
    try:
        import boto3
        import botocore.config
    except ImportError:
        return None
    options = fs.__reduce__()[1][0]
    if options.get("role_arn"):
        return None
    kwargs: dict[str, Any] = {"region_name": options.get("region") or None}
    if options.get("endpoint_override"):
        endpoint = options["endpoint_override"]
        kwargs["endpoint_url"] = endpoint if "://" in endpoint else f"{options.get('scheme') or 'https'}://{endpoint}"
    if options.get("access_key"):
        kwargs |= {"aws_access_key_id": options["access_key"], "aws_secret_access_key": options["secret_key"],
                   "aws_session_token": options.get("session_token") or None}
    if options.get("anonymous"):
        import botocore

        kwargs["config"] = botocore.config.Config(signature_version=botocore.UNSIGNED)
    return boto3.client("s3", **kwargs)


class SweepLease:
    """The lease of one sweep folder: ``acquire`` (or refuse), heartbeat while held, ``release``."""

    def __init__(self, fs: pafs.FileSystem, folder: str, name: str, takeover: bool = False,
                 on_lost: Callable[[], None] = _thread.interrupt_main) -> None:
        """``on_lost`` runs (in the heartbeat thread) when another driver took the lease; the default
        interrupts the main thread, where Tune's SIGINT handler stops the sweep and saves its state."""
        self.path, self.name, self.takeover = f"{folder.rstrip('/')}/{LEASE_FILE}", name, takeover
        self.store = lease_store(fs, self.path)
        self.on_lost = on_lost
        self.token = uuid.uuid4().hex
        self.version: Version = None  # of our last write
        self.started = time.time()
        self.lost_to: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        current, version = self.store.read()
        if current is not None and not self.takeover and not current.stale():
            raise SweepError(self._held_message(current))
        self.version = self.store.swap(version, self._holder(), settle=True)
        if self.version is None:
            again = self.read()
            raise SweepError(f"another driver claimed sweep {self.name!r} at the same moment; "
                             + (self._held_message(again) if again else "try again"))
        self._thread = threading.Thread(target=self._heartbeat, name="sweep-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if self.version is not None:
                self.store.delete(self.version)
        except (OSError, SweepError):
            pass  # a lease left behind goes stale

    def __enter__(self) -> SweepLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def read(self) -> Holder | None:
        return self.store.read()[0]

    def _holder(self) -> Holder:
        return Holder(self.token, socket.gethostname(), os.getpid(), self.started, time.time())

    def beat(self) -> bool:
        """One heartbeat: renew the lease, or, if another driver holds it now, record that and call
        ``on_lost``. Returns whether the lease is still ours."""
        try:
            version = self.store.swap(self.version, self._holder(), settle=False)
            if version is None:
                current, seen = self.store.read()
                if current is None:  # deleted under us, not taken: write it again
                    version = self.store.swap(seen, self._holder(), settle=False)
            if version is None:
                self.lost_to = self.read()
                self.on_lost()
                return False
            self.version = version
        except (OSError, SweepError):
            pass  # a passing storage fault: the next beat tries again
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S) and self.beat():
            pass

    def _held_message(self, holder: Holder) -> str:
        return (f"sweep {self.name!r} is being run by another driver ({holder.describe()}). Wait for it "
                f"to finish, or stop it; if that driver is really dead, its lease goes stale "
                f"{STALE_S:.0f} s after its last heartbeat, or pass --takeover to take the sweep now")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
