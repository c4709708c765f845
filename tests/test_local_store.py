"""The sealed store: round trips, every tampering detected as one opaque error, key
rotation, and writers killed mid-write leaving a readable previous version."""

from __future__ import annotations

import io
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from privml import ConfigError, IntegrityError
from privml.store import LocalStore
from privml.store._seal import HEADER_SIZE, TAG, open_stream, seal_stream

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def _seal(data: bytes, *, size: int = 64, aad: bytes = b"a") -> bytes:
    out = io.BytesIO()
    seal_stream(data, out, key=KEY, aad=aad, segment_size=size)
    return out.getvalue()


def _open(blob: bytes, *, aad: bytes = b"a", key: bytes = KEY) -> bytes:
    return b"".join(open_stream(io.BytesIO(blob), key=key, aad=aad))


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 128, 1000])
def test_seal_round_trip_at_every_segment_boundary(n: int) -> None:
    data = os.urandom(n)
    assert _open(_seal(data)) == data
    # from a file object and from an iterable of odd-sized pieces too
    out = io.BytesIO()
    seal_stream((data[i:i + 7] for i in range(0, n, 7)), out, key=KEY, aad=b"a",
                segment_size=64)
    assert _open(out.getvalue()) == data


def test_every_flipped_byte_is_detected() -> None:
    blob = _seal(os.urandom(150))
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(IntegrityError):
            _open(bytes(bad))


def test_truncation_reordering_trailing_bytes_wrong_key_and_aad() -> None:
    blob = _seal(os.urandom(200))  # segments of 64: 3 full + 1 short
    seg = 64 + TAG
    body = blob[HEADER_SIZE:]
    segments = [body[i:i + seg] for i in range(0, len(body), seg)]
    cases = [
        blob[:HEADER_SIZE + 2 * seg],  # cut at a segment boundary
        blob[:-1],  # cut inside the last segment
        blob[:HEADER_SIZE - 1],  # cut inside the header
        blob[:HEADER_SIZE] + segments[1] + segments[0] + b"".join(segments[2:]),  # swapped
        blob + b"\0",  # a trailing byte
        blob + segments[0],  # a segment replayed at the end
    ]
    for bad in cases:
        with pytest.raises(IntegrityError):
            _open(bad)
    with pytest.raises(IntegrityError):
        _open(blob, key=OTHER)
    with pytest.raises(IntegrityError):
        _open(blob, aad=b"b")


def test_store_round_trip_versions_list_delete(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "s", key=KEY) as st:
        assert st.put("model", b"one") == 1
        assert st.put("model", b"two") == 2
        st.put("data", io.BytesIO(b"x" * 3_000_000))  # three segments, from a file
        assert st.get("model") == b"two" and st.get("model", 1) == b"one"
        assert st.versions("model") == [1, 2] and st.list() == {"data": 1, "model": 2}
        assert st.get("data") == b"x" * 3_000_000
        assert st.delete("model") == 2
        with pytest.raises(KeyError):
            st.get("model")
    with LocalStore(tmp_path / "s", key=KEY) as again:
        assert again.list() == {"data": 1}


def test_wrong_key_wrong_store_and_record_swaps_are_one_opaque_error(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "s", key=KEY) as st:
        st.put("a", b"alpha")
        st.put("a", b"alpha-2")
        st.put("b", b"beta")
    with pytest.raises(IntegrityError):
        LocalStore(tmp_path / "s", key=OTHER)
    with pytest.raises(IntegrityError):
        LocalStore(tmp_path / "s", key="a passphrase")
    db = sqlite3.connect(tmp_path / "s" / "index.sqlite")

    def row(name: str, version: int) -> tuple[str, bytes]:
        f, w = db.execute("SELECT file, wrapped FROM records WHERE name=? AND version=?",
                          (name, version)).fetchone()
        return f, w

    old_file, old_wrapped = row("a", 1)
    # Rollback of one record: version 2's row given version 1's sealed file and key.
    db.execute("UPDATE records SET file=?, wrapped=? WHERE name='a' AND version=2",
               (old_file, old_wrapped))
    db.commit()
    with LocalStore(tmp_path / "s", key=KEY) as st, pytest.raises(IntegrityError):
        st.get("a")
    # Another record's bytes under this name.
    b_file, b_wrapped = row("b", 1)
    db.execute("UPDATE records SET file=?, wrapped=? WHERE name='a' AND version=1",
               (b_file, b_wrapped))
    db.commit()
    with LocalStore(tmp_path / "s", key=KEY) as st, pytest.raises(IntegrityError):
        st.get("a", 1)
    # A record copied from another store (its own key) does not open here either.
    with LocalStore(tmp_path / "t", key=KEY) as other:
        other.put("b", b"beta")
    t = sqlite3.connect(tmp_path / "t" / "index.sqlite")
    f, w = t.execute("SELECT file, wrapped FROM records").fetchone()
    shutil.copy(tmp_path / "t" / "objects" / f, tmp_path / "s" / "objects" / f)
    db.execute("UPDATE records SET file=?, wrapped=? WHERE name='b'", (f, w))
    db.commit()
    with LocalStore(tmp_path / "s", key=KEY) as st, pytest.raises(IntegrityError):
        st.get("b")


def test_a_tampered_side_file_never_yields_plaintext(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "s", key=KEY) as st:
        st.put("a", b"secret value " * 10)
        (obj,) = (tmp_path / "s" / "objects").glob("*.seal")
        raw = obj.read_bytes()
        for i in range(0, len(raw), 7):
            bad = bytearray(raw)
            bad[i] ^= 0x80
            obj.write_bytes(bytes(bad))
            with pytest.raises(IntegrityError):
                st.get("a")
        obj.unlink()
        with pytest.raises(IntegrityError):
            st.get("a")


def test_key_rotation_keeps_everything_readable_with_the_new_key_only(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "s", key="old passphrase") as st:
        for i in range(5):
            st.put(f"r{i}", f"value {i}".encode())
        files = {p.name: p.read_bytes() for p in (tmp_path / "s" / "objects").iterdir()}
        st.rotate_key(KEY)
        # the sealed values were not rewritten
        assert {p.name: p.read_bytes()
                for p in (tmp_path / "s" / "objects").iterdir()} == files
    with pytest.raises(IntegrityError):
        LocalStore(tmp_path / "s", key="old passphrase")
    with LocalStore(tmp_path / "s", key=KEY) as st:
        assert [st.get(f"r{i}") for i in range(5)] == [f"value {i}".encode()
                                                       for i in range(5)]


def test_keys_come_from_the_environment_and_bad_keys_are_config_errors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    monkeypatch.setenv("PRIVML_STORE_KEY", base64.b64encode(KEY).decode())
    with LocalStore(tmp_path / "s") as st:
        st.put("a", b"x")
    with LocalStore(tmp_path / "s", key=KEY) as st:
        assert st.get("a") == b"x"
    monkeypatch.setenv("PRIVML_STORE_KEY", "not base64 of 32 bytes")
    with pytest.raises(ConfigError, match="PRIVML_STORE_KEY"):
        LocalStore(tmp_path / "s")
    monkeypatch.delenv("PRIVML_STORE_KEY")
    with pytest.raises(ConfigError, match="no store key"):
        LocalStore(tmp_path / "s")
    with pytest.raises(ConfigError, match="32 bytes"):
        LocalStore(tmp_path / "s", key=b"short")


def _value(i: int) -> bytes:
    """The i-th value the killed writer puts: 0 bytes to 2.6 MB (up to three segments)."""
    import random

    return random.Random(i).randbytes((i * 104_729) % 2_600_000)


_WRITER = """
import sys
sys.path.insert(0, sys.argv[3])
from test_local_store import _value
from privml.store import LocalStore
with LocalStore(sys.argv[1], key=bytes(range(32))) as st:
    print("ready", flush=True)
    start = int(sys.argv[2])
    for i in range(start, min(start + 30, 100)):  # at most 30, then wait to be killed
        print(i, st.put(f"rec-{i % 7}", _value(i)), flush=True)
    print("capped", flush=True)
    sys.stdin.read()
"""


def _objects_match_rows(path: Path) -> bool:
    with closing(sqlite3.connect(path / "index.sqlite")) as db:
        states = {r[0] for r in db.execute("SELECT state FROM records")}
        files = {r[0] for r in db.execute("SELECT file FROM records")}
    return states <= {"complete"} and files == {f.name for f in (path / "objects").iterdir()}


def test_a_writer_killed_at_random_points_loses_no_committed_write(tmp_path: Path) -> None:
    """100 writes of values of 0-2.6 MB to 7 records by a writer SIGKILLed at random
    points and restarted where it stopped: after every kill each version reads back as a
    complete value written to that record, and every write the writer saw committed is
    there. Recovery removes what the dead writers left."""
    import hashlib
    import random

    digest = {i: hashlib.sha256(_value(i)).digest() for i in range(100)}
    allowed = {f"rec-{k}": {digest[i] for i in range(k, 100, 7)} for k in range(7)}
    path, rng = tmp_path / "s", random.Random(20261129)
    committed: dict[tuple[str, int], int] = {}
    nxt, kills = 0, 0
    while nxt < 100:
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(nxt),
                                 str(Path(__file__).parent)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        # kill after a random number of commits plus a random fraction of a write (one
        # put takes ~6 ms here): counted in writes, not seconds, so as fast a machine
        # as any still has its writer killed mid-run
        seen: list[str] = []
        for _ in range(rng.randrange(12)):
            seen.append(proc.stdout.readline().rstrip("\n"))
            if seen[-1] == "capped":  # it waits on stdin now: read no further
                break
        time.sleep(rng.uniform(0.0, 0.008))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        lines = [line for line in seen + out.splitlines() if line]
        # a writer killed before it reached its cap was killed mid-run (not idle)
        kills += "capped" not in lines and proc.returncode == -signal.SIGKILL
        for line in lines:
            if line == "capped":
                continue
            i, version = map(int, line.split())
            committed[(f"rec-{i % 7}", version)] = i
            nxt = i + 1
        if not path.exists():
            continue
        with LocalStore(path, key=KEY) as st:  # opening recovers the dead writer's row
            for name, latest in st.list().items():
                assert st.versions(name)[-1] == latest
                for v in st.versions(name):
                    assert hashlib.sha256(st.get(name, v)).digest() in allowed[name]
            for (name, version), i in committed.items():
                assert hashlib.sha256(st.get(name, version)).digest() == digest[i]
    assert kills >= 3  # the writer was really killed mid-run, several times
    with LocalStore(path, key=KEY) as st:
        st.recover(grace=0)  # and the files a kill left between file and row
        assert sum(len(st.versions(n)) for n in st.list()) >= 100
    assert _objects_match_rows(path)


_SLOW = """
import sys, time
from privml.store import LocalStore
def slow():
    yield b"a" * 3_000_000
    print("writing", flush=True)
    sys.stdin.readline()  # held mid-write until the test says so
    yield b"b" * 10
with LocalStore(sys.argv[1], key=bytes(range(32))) as st:
    print(st.put("rec", slow()), flush=True)
"""


def test_recovery_leaves_a_live_writer_alone_and_failed_puts_leave_nothing(
        tmp_path: Path) -> None:
    path = tmp_path / "s"
    with LocalStore(path, key=KEY) as st:
        st.put("rec", b"v1")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "writing"
    with LocalStore(path, key=KEY) as st:
        assert st.recover(grace=0) == (0, 0)  # its pending row and file are its own
        assert st.get("rec") == b"v1"
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "2"
    assert proc.wait(timeout=60) == 0

    def broken() -> Iterator[bytes]:
        yield b"x" * 2_000_000
        raise OSError("the source failed")

    with LocalStore(path, key=KEY) as st:
        assert st.get("rec") == b"a" * 3_000_000 + b"b" * 10
        with pytest.raises(OSError, match="source failed"):
            st.put("rec", broken())
        assert st.versions("rec") == [1, 2]
    assert _objects_match_rows(path)  # no pending row, no file left behind
    # a crash between a file and its row (simulated: a file no row names) is swept
    (path / "objects" / "0123.tmp").write_bytes(b"junk")
    with LocalStore(path, key=KEY) as st:
        assert st.recover(grace=0) == (0, 1)
    assert _objects_match_rows(path)


def test_a_write_across_a_key_rotation_by_another_process_is_refused(
        tmp_path: Path) -> None:
    path = tmp_path / "s"
    writer = LocalStore(path, key=KEY)
    writer.put("rec", b"v1")

    def rotating() -> Iterator[bytes]:
        yield b"x" * 10
        with LocalStore(path, key=KEY) as other:
            other.rotate_key(OTHER)

    with pytest.raises(ConfigError, match="rotated"):
        writer.put("rec", rotating())
    writer.close()
    with LocalStore(path, key=OTHER) as st:
        assert st.versions("rec") == [1] and st.get("rec") == b"v1"
    assert _objects_match_rows(path)


_WORKER = """
import json, sys
from privml.store import LocalStore
path, me = sys.argv[1], int(sys.argv[2])
done = []
with LocalStore(path, key=bytes(range(32))) as st:
    for i in range(25):
        name = f"shared-{i % 3}"
        value = f"{me}:{i}:".encode() * 500
        done.append([name, st.put(name, value), value.decode()])
        for other in st.list():  # read whatever the others committed so far
            st.get(other)
print(json.dumps(done))
"""


def test_four_processes_share_a_store_without_losing_a_committed_write(
        tmp_path: Path) -> None:
    import json

    LocalStore(tmp_path / "s", key=KEY).close()
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path / "s"), str(k)],
                              stdout=subprocess.PIPE, text=True) for k in range(4)]
    results = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    with LocalStore(tmp_path / "s", key=KEY) as st:
        seen = set()
        for done in results:
            for name, version, value in done:
                assert st.get(name, version) == value.encode()
                seen.add((name, version))
        assert len(seen) == 100  # every version number given out once
        assert sum(len(st.versions(n)) for n in st.list()) == 100


_BIG = """
import hashlib, resource, sys
from privml.store import LocalStore
MB = 1 << 20
def chunks():
    for i in range(200):
        yield bytes([i % 251]) * MB
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with LocalStore(sys.argv[1], key=bytes(range(32))) as st:
    st.put("big", chunks())
    h, n = hashlib.sha256(), 0
    for piece in st.open("big"):
        h.update(piece)
        n += len(piece)
want = hashlib.sha256()
for c in chunks():
    want.update(c)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, h.hexdigest() == want.hexdigest(), (peak - base) // 1024)
"""


def test_a_200_mb_value_round_trips_in_bounded_memory(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _BIG, str(tmp_path / "s")],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    n, same, grew_mb = out.split()
    assert int(n) == 200 << 20 and same == "True"
    assert int(grew_mb) < 64  # the value is 200 MB; memory grew by a few segments at most


def test_raw_key_files_may_hold_any_bytes(tmp_path: Path) -> None:
    """A raw 32-byte key that begins and ends with whitespace bytes is still that key."""
    import base64

    from privml.store import key_from_file

    raw = b"\n \t" + os.urandom(26) + b" \r\n"
    (tmp_path / "raw.key").write_bytes(raw)
    assert key_from_file(tmp_path / "raw.key") == raw
    (tmp_path / "b64.key").write_text(base64.b64encode(raw).decode() + "\n")
    assert key_from_file(tmp_path / "b64.key") == raw
