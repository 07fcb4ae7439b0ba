"""The node's cache of decoded images: each class of a file-backed split decoded once, as a uint8 .npy.

A chunk is the images of one class of one split, decoded as :func:`decode_image` does (shorter side
resized, centre crop) into ``[n, 3, size, size]`` uint8 and stored as ``<key>.npy`` in the cache folder,
where ``key`` hashes the decoder's format, the image size and every file's path, byte size and
modification time (ns). A file that changes, or another image size, gives another key, so a stale
chunk is never read. Chunks are per class, not per task, so any class order (any seed) reuses them.

Writers decode into ``<key>.<pid>.<thread>.tmp`` and rename it over ``<key>.npy`` (atomic): a reader
never sees half a chunk. A per-chunk ``flock`` makes the trials of a node that want the same chunk at
once decode it once (the others wait, then read); where locks are not supported each decodes and the
last rename wins, with the same bytes. Each decode appends one JSON line to ``decodes.log`` in the
folder (key, images, seconds, threads, pid, host), the record of what was decoded where and when.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from cil.data.errors import DataError

DECODE_FORMAT = 1  # part of every key: bump it when decode_image's output changes
LOG_NAME = "decodes.log"


def default_cache_dir() -> str:
    """``$CIL_CACHE_DIR`` or ``~/.cache/cil/decoded``, absolute, on the machine that asks."""
    return os.path.abspath(os.path.expanduser(os.environ.get("CIL_CACHE_DIR", "~/.cache/cil/decoded")))


def decode_threads() -> int:
    """The decoder's threads: the trial's CPU share, not the node's.

    ``OMP_NUM_THREADS`` when set (Ray sets it to a trial's ``num_cpus``), capped by the CPUs this
    process may run on (``os.sched_getaffinity``: a container's or ``taskset``'s limit), else the latter.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return max(1, min(int(omp), cpus))
    return max(1, cpus)


def decode_image(path: str, size: int) -> np.ndarray:
    """Read ``path`` as RGB, shorter side resized to ``size``, centre-cropped: uint8 ``[size, size, 3]``."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: let the decoder downscale by 2^k, still >= size
            img = img.convert("RGB")
            w, h = img.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, ValueError) as e:
        raise DataError(f"cannot decode image {path!r}: {e}") from e


def chunk_key(paths: Sequence[str], size: int) -> str:
    """The key of the chunk of ``paths`` decoded at ``size``: the format, the size and each file's path,
    byte size and modification time (a missing file is a DataError naming it)."""
    h = hashlib.sha256(f"cil-decoded/{DECODE_FORMAT}/{int(size)}\n".encode())
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as e:
            raise DataError(f"cannot read image {p!r}: {e}") from e
        h.update(json.dumps([os.fspath(p), st.st_size, st.st_mtime_ns]).encode() + b"\n")
    return h.hexdigest()[:32]


class DecodeCache:
    """One cache folder; :meth:`chunks` gives decoded chunks as read-only memory maps."""

    def __init__(self, folder: str | os.PathLike | None = None) -> None:
        self.folder = os.path.abspath(os.path.expanduser(os.fspath(folder))) if folder else default_cache_dir()

    def path(self, key: str) -> str:
        return os.path.join(self.folder, f"{key}.npy")

    def chunks(self, wanted: dict[str, tuple[Sequence[str], int]]) -> dict[str, np.ndarray]:
        """The arrays of the chunks ``key -> (paths, size)``, decoding the missing ones.

        Missing chunks whose lock is free are decoded first; those another process (or thread) is
        decoding are waited for afterwards, so trials that start together share the work.
        """
        out = {k: a for k, (paths, size) in wanted.items()
               if (a := self._open(k, len(paths), size)) is not None}
        busy = []
        for key, (paths, size) in wanted.items():
            if key in out:
                continue
            with self._lock(key, wait=False) as held:
                if held:
                    out[key] = self._open_or_decode(key, paths, size)
                else:
                    busy.append(key)
        for key in busy:
            paths, size = wanted[key]
            with self._lock(key, wait=True):
                out[key] = self._open_or_decode(key, paths, size)
        return out

    # ---- one chunk ---------------------------------------------------------------------------------
    def _open_or_decode(self, key: str, paths: Sequence[str], size: int) -> np.ndarray:
        arr = self._open(key, len(paths), size)  # another writer may have finished since we looked
        return self._decode(key, paths, size) if arr is None else arr

    def _open(self, key: str, n: int, size: int) -> np.ndarray | None:
        """The stored chunk, or None when it is missing or not the expected ``[n, 3, size, size]`` uint8."""
        try:
            arr = np.load(self.path(key), mmap_mode="r")
        except (OSError, ValueError, EOFError):
            return None
        return arr if arr.dtype == np.uint8 and arr.shape == (n, 3, size, size) else None

    @contextlib.contextmanager
    def _lock(self, key: str, wait: bool) -> Iterator[bool]:
        """Hold ``<key>.lock`` (yields True), or yield False when ``wait`` is false and another holds it.
        Where the file system refuses locks, yields True unlocked (writers then race, each correctly)."""
        try:
            os.makedirs(self.folder, exist_ok=True)
            fd = os.open(os.path.join(self.folder, f"{key}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise DataError(f"data.cache_dir {self.folder!r} is not writable ({e}); set data.cache_dir "
                            "or $CIL_CACHE_DIR to a local folder this process may write") from e
        held = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            held = False
        except OSError:  # no locks here (some network file systems): proceed unlocked
            pass
        try:
            yield held
        finally:
            os.close(fd)  # releases the lock

    def _decode(self, key: str, paths: Sequence[str], size: int) -> np.ndarray:
        """Decode ``paths`` into a temporary file and rename it into place (the caller holds the lock)."""
        for name in os.listdir(self.folder):  # left by a writer that died (we hold the lock)
            if name.startswith(f"{key}.") and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.folder, name))
        tmp = os.path.join(self.folder, f"{key}.{os.getpid()}.{threading.get_ident()}.tmp")
        start = time.perf_counter()
        threads = decode_threads()
        try:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), 3, size, size))

            def fill(k: int) -> None:
                arr[k] = decode_image(paths[k], size).transpose(2, 0, 1)

            if threads <= 1 or len(paths) <= 1:
                for k in range(len(paths)):
                    fill(k)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(fill, range(len(paths))))
            arr.flush()  # no fsync: a killed trial loses nothing (the page cache outlives it), and a node
            # that loses power loses its local cache with it; fsync would triple the decode time
            os.replace(tmp, self.path(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        seconds = time.perf_counter() - start
        self._log({"key": key, "images": len(paths), "size": size, "seconds": round(seconds, 4),
                   "threads": threads, "pid": os.getpid(), "host": socket.gethostname(), "time": time.time()})
        out = self._open(key, len(paths), size)
        if out is None:
            raise DataError(f"the decoded chunk {self.path(key)!r} could not be read back")
        return out

    def _log(self, record: dict) -> None:
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(os.path.join(self.folder, LOG_NAME), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)  # one short O_APPEND write: lines of concurrent writers do not interleave
        finally:
            os.close(fd)

