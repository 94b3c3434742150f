"""LMDB databases of Caffe ``Datum`` records: what real Caffe's Data layer reads.

Caffe iterates an LMDB in key order (LMDB keeps keys sorted) and wraps around to the first record
at the end.  Writers here use DIGITS' ``%08d`` keys, so key order is insertion order, grow the
map as needed and commit in batches.

LMDB refuses to open one environment twice in a process, so readers share environments through
a reference-counted cache.
"""
from __future__ import annotations

import os
import threading

import lmdb

from ..errors import DataError
from ..proto import caffe_pb2

_ENVS: dict[str, list] = {}  # realpath -> [env, refcount]
_ENVS_LOCK = threading.Lock()


def is_lmdb(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "data.mdb")) or (os.path.isfile(path) and path.endswith(".mdb"))


def is_leveldb(path: str) -> bool:
    return os.path.isdir(path) and (os.path.exists(os.path.join(path, "CURRENT"))
                                    and any(n.endswith((".ldb", ".sst")) or n.startswith("MANIFEST")
                                            for n in os.listdir(path)))


def acquire_env(path: str) -> lmdb.Environment:
    """Open (or share) a read-only LMDB environment.  Missing or unreadable: DataError."""
    if not os.path.exists(path):
        raise DataError(f"LMDB not found: {path}")
    if not is_lmdb(path):
        hint = " (it looks like a LevelDB; brewnet reads LMDB only)" if is_leveldb(path) else ""
        raise DataError(f"not an LMDB (no data.mdb): {path}{hint}")
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is None:
            try:
                env = lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=512,
                                subdir=os.path.isdir(path))
            except lmdb.Error as e:
                raise DataError(f"cannot open LMDB {path}: {e}") from None
            entry = _ENVS[key] = [env, 0]
        entry[1] += 1
        return entry[0]


def release_env(env: lmdb.Environment) -> None:
    with _ENVS_LOCK:
        for key, entry in list(_ENVS.items()):
            if entry[0] is env:
                entry[1] -= 1
                if entry[1] <= 0:
                    del _ENVS[key]
                    env.close()
                return


def parse_datum(value: bytes, key: bytes | str = b"?") -> caffe_pb2.Datum:
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except Exception as e:  # protobuf DecodeError
        raise DataError(f"record {key_text(key)} is not a Datum: {e}") from None
    return datum


def key_text(key) -> str:
    if isinstance(key, bytes):
        try:
            return repr(key.decode("ascii"))
        except UnicodeDecodeError:
            return repr(key)
    return repr(key)


class DatumCursor:
    """Sequential reader of (key, value) records that wraps around like Caffe's DataLayer::Next.

    Owns one long-lived read transaction; use from one thread.
    """

    def __init__(self, path: str):
        self.path = path
        self.env = acquire_env(path)
        self.txn = self.env.begin(buffers=False)
        self.cursor = self.txn.cursor()
        if not self.cursor.first():
            self.close()
            raise DataError(f"LMDB is empty: {path}")
        self.wrapped = 0

    def __len__(self) -> int:
        return self.txn.stat()["entries"]

    def current(self) -> tuple[bytes, bytes]:
        return self.cursor.key(), self.cursor.value()

    def next(self) -> None:
        if not self.cursor.next():
            self.cursor.first()  # "Restarting data prefetching from start."
            self.wrapped += 1

    def close(self) -> None:
        if self.env is not None:
            try:
                self.cursor.close()
                self.txn.abort()
            except lmdb.Error:
                pass
            release_env(self.env)
            self.env = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def read_datums(path: str, limit: int | None = None):
    """Yield (key, Datum) from an LMDB in key order (no wrap-around)."""
    for i, (k, v) in enumerate(iter_records(path)):
        if limit is not None and i >= limit:
            break
        yield k, parse_datum(v, k)


def iter_records(path: str, window_bytes: int = 8 << 20):
    """Yield (key, value) of every record in key order, without wrapping around.

    LMDB's memory map keeps the pages it has read resident (counted in the process's RSS) while
    the environment is open, so the environment is reopened after every ``window_bytes`` read:
    reading a large LMDB once does not grow the RSS (the pages stay in the page cache)."""
    last: bytes | None = None
    more = True
    while more:
        env = acquire_env(path)
        try:
            with env.begin(buffers=False) as txn:
                cur = txn.cursor()
                more = cur.first() if last is None else cur.set_range(last)
                if more and last is not None and cur.key() == last:
                    more = cur.next()
                read = 0
                while more and read < window_bytes:
                    key, value = cur.key(), cur.value()
                    read += len(value)
                    last = key
                    yield key, value
                    more = cur.next()
        finally:
            release_env(env)


def read_record(path: str, key: bytes | str) -> bytes:
    """One record's value by key (DataError when the LMDB has none)."""
    key_bytes = key.encode("ascii") if isinstance(key, str) else key
    env = acquire_env(path)
    try:
        with env.begin() as txn:
            value = txn.get(key_bytes)
    finally:
        release_env(env)
    if value is None:
        raise DataError(f"{path}: no record with key {key_text(key_bytes)}")
    return value


def count_records(path: str) -> int:
    env = acquire_env(path)
    try:
        return env.stat()["entries"]
    finally:
        release_env(env)


class DatumWriter:
    """Write Datums into a new LMDB with ``%08d`` keys; the map grows as needed.

    Use as a context manager; ``put(datum)`` or ``put_raw(key, bytes)``.
    """

    def __init__(self, path: str, batch: int = 1000, map_size: int = 1 << 26, key_format: str = "%08d"):
        if os.path.exists(path) and os.listdir(path):
            raise DataError(f"refusing to overwrite a non-empty database folder: {path}")
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.batch = batch
        self.map_size = map_size
        self.key_format = key_format
        self.env = lmdb.open(path, map_size=map_size, subdir=True, meminit=False, map_async=True)
        self.pending: list[tuple[bytes, bytes]] = []
        self.count = 0

    def put(self, datum: caffe_pb2.Datum) -> None:
        self.put_raw((self.key_format % self.count).encode("ascii"), datum.SerializeToString())

    def put_raw(self, key: bytes, value: bytes) -> None:
        self.pending.append((key, value))
        self.count += 1
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        while True:
            txn = self.env.begin(write=True)
            try:
                for k, v in self.pending:
                    txn.put(k, v)
                txn.commit()
                break
            except lmdb.MapFullError:
                txn.abort()
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
        self.pending.clear()

    def close(self) -> None:
        if self.env is not None:
            self.flush()
            self.env.sync()
            self.env.close()
            self.env = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
