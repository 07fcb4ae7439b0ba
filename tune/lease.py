"""One driver per sweep: a lease file with a heartbeat in ``<storage>/<name>/``.

Object stores have no atomic rename or create-if-absent through pyarrow, so the lease is built from
what every store has, read-after-write consistency: a driver reads the lease, refuses if someone else
holds it and is alive, otherwise writes its own (a random token), waits ``SETTLE_S`` and reads it
back: of two drivers that raced, only the one whose write landed last still finds its token. The
holder rewrites the lease every ``HEARTBEAT_S``; if it ever finds another token there (a
``--takeover``), it stops its sweep. A lease is stale, and may be taken without ``--takeover``, when
its heartbeat is older than ``STALE_S`` or its holder ran on this host and that process is gone.
"""

from __future__ import annotations

import _thread
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

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


class SweepLease:
    """The lease of one sweep folder: ``acquire`` (or refuse), heartbeat while held, ``release``."""

    def __init__(self, fs: pafs.FileSystem, folder: str, name: str, takeover: bool = False,
                 on_lost: Callable[[], None] = _thread.interrupt_main) -> None:
        """``on_lost`` runs (in the heartbeat thread) when another driver took the lease; the default
        interrupts the main thread, where Tune's SIGINT handler stops the sweep and saves its state."""
        self.fs, self.path, self.name, self.takeover = fs, f"{folder.rstrip('/')}/{LEASE_FILE}", name, takeover
        self.on_lost = on_lost
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self.lost_to: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        current = self.read()
        if current is not None and not self.takeover and not current.stale():
            raise SweepError(self._held_message(current))
        self._write()
        time.sleep(SETTLE_S)
        again = self.read()
        if again is None or again.token != self.token:
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
            current = self.read()
            if current is not None and current.token == self.token:
                self.fs.delete_file(self.path)
        except OSError:
            pass  # a lease left behind goes stale

    def __enter__(self) -> SweepLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def read(self) -> Holder | None:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return Holder(**json.loads(f.read()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as err:
            if self.fs.get_file_info(self.path).type == pafs.FileType.NotFound:
                return None
            raise SweepError(f"cannot read the sweep lease {self.path}: {err}") from None

    def _write(self) -> None:
        holder = Holder(self.token, socket.gethostname(), os.getpid(), self.started, time.time())
        with self.fs.open_output_stream(self.path) as out:
            out.write(json.dumps(asdict(holder)).encode())

    def beat(self) -> bool:
        """One heartbeat: renew the lease, or, if another driver holds it now, record that and call
        ``on_lost``. Returns whether the lease is still ours."""
        try:
            current = self.read()
            if current is not None and current.token != self.token:
                self.lost_to = current
                self.on_lost()
                return False
            self._write()
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
