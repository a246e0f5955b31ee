"""scheduler.runtime.archive's reader on its own: what `pack` writes (long names included) and
what tar writers write passes, with the same members tarfile sees; every header's payload
is bounded and counted; bombs, links, unsafe paths and broken streams are refused with
one line, quickly and in little memory, whether checked whole, fed in pieces, or unpacked."""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import time
import tracemalloc
from pathlib import Path

import pytest

import bombs
from scheduler.runtime import archive
from scheduler.runtime.archive import ArchiveError, Reader, check_archive, pack, unpack

LONG = "a-file-name-well-over-one-hundred-bytes-" * 4  # 160 bytes: past ustar's 100-byte name field


def _tree(root: Path) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "train.py").write_text("print('hello')\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "empty.txt").write_bytes(b"")
    (root / "data.bin").write_bytes(os.urandom(150_000))
    (root / "pkg" / "sub" / f"{LONG}.py").write_text("x = 1\n")
    (root / "pkg" / "ünïcödé-名前.txt").write_text("u\n")
    deep = root.joinpath(*[f"{i:02d}-" + "d" * 200 for i in range(12)])  # a 2,448-byte path
    deep.mkdir(parents=True)
    (deep / "leaf.py").write_text("deep = True\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: x\n")
    return root


def _listing(root: Path) -> dict[str, tuple]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), bool(path.stat().st_mode & 0o100))
    return out


class Recorder:
    """A sink that keeps what the reader hands over: (kind, path, size, sha256 of the contents)."""

    def __init__(self) -> None:
        self.members, self._sha = [], None

    def member(self, kind, parts, size, mode, mtime) -> None:
        self.members.append([kind, "/".join(parts), size, None])
        self._sha = hashlib.sha256()

    def data(self, chunk) -> None:
        self._sha.update(chunk)

    def end(self) -> None:
        self.members[-1][3] = self._sha.hexdigest() if self.members[-1][0] == archive.FILE else None


def _read(data: bytes, piece: int | None = None) -> tuple[archive.ArchiveInfo, list]:
    rec = Recorder()
    reader = Reader(rec)
    for i in range(0, len(data), piece or len(data)):
        reader.feed(data[i:i + (piece or len(data))])
    return reader.finish(), [tuple(m) for m in rec.members]


def _tarfile_members(data: bytes) -> list:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar:
            name = m.name.rstrip("/").removeprefix("./")
            if name in (".", ""):
                continue
            if m.isdir():
                out.append((archive.DIR, name, 0, None))
            else:
                out.append((archive.FILE, name, m.size, hashlib.sha256(tar.extractfile(m).read()).hexdigest()))
    return out


def _refused(data: bytes, match: str) -> str:
    with pytest.raises(ArchiveError, match=match) as caught:
        check_archive(data)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message
    return message


# -- what passes ------------------------------------------------------------------------------
def test_a_packed_directory_unpacks_to_the_same_files_long_names_included(tmp_path):
    src = _tree(tmp_path / "src")
    data = pack(src)
    info = check_archive(data)
    expected = {k: v for k, v in _listing(src).items() if not k.startswith(".git")}
    assert info.entries == len(expected)
    sizes = sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and ".git" not in p.parts)
    assert info.unpacked_bytes > sizes  # the PAX headers of the long names count too
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.packed_bytes == len(data)
    archive_file = tmp_path / "w.tar.gz"
    archive_file.write_bytes(data)
    for step in (7, 1 << 20):
        dest = tmp_path / f"out-{step}"
        unpack(archive_file, dest, read_step=step)
        assert _listing(dest) == expected
        assert (dest / "run.sh").stat().st_mode & 0o777 == 0o700
        assert (dest / "train.py").stat().st_mode & 0o777 == 0o600


def test_the_reader_sees_what_tarfile_sees_in_every_tar_format(tmp_path):
    src = _tree(tmp_path / "src")
    shutil.rmtree(src / ".git")
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", format=fmt) as tar:
            for path in sorted(src.rglob("*")):
                try:
                    tar.add(path, arcname=str(path.relative_to(src)), recursive=False)
                except ValueError:
                    assert fmt == tarfile.USTAR_FORMAT  # a name ustar's fields cannot hold
        data = buf.getvalue()
        info, seen = _read(data)
        assert seen == _tarfile_members(data), fmt
        assert _read(data, piece=333)[1] == seen and info == _read(data, piece=333)[0]


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar(1) on this machine")
@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar"])
def test_archives_written_by_tar_itself_pass(tmp_path, fmt):
    src = _tree(tmp_path / "src")
    shutil.rmtree(src / ".git")
    if fmt == "ustar":  # names it cannot hold go; a path over 100 bytes stays (ustar's prefix field)
        shutil.rmtree(next(src.glob("00-*")))
        (src / "pkg" / "sub" / f"{LONG}.py").rename(src / "pkg" / "sub" / f"{'b' * 95}.py")
    out = tmp_path / "w.tar.gz"
    subprocess.run(["tar", f"--format={fmt}", "-czf", str(out), "-C", str(src), "."], check=True)
    data = out.read_bytes()
    assert _read(data)[1] == _tarfile_members(data)
    unpack(out, tmp_path / "dest")
    assert _listing(tmp_path / "dest") == _listing(src)


def test_header_payloads_within_the_bound_pass_and_count_toward_the_unpacked_limit(monkeypatch):
    near = archive.HEADER_MAX_BYTES - 100
    record = bombs.pax_record("comment", b"c" * (near - len(" comment=\n") - len(str(near))))
    assert len(record) == near
    data = bombs.gz(b"".join([bombs.header("././@PaxHeader", tarfile.XHDTYPE, near), bombs.padded(record),
                              bombs.header("a.py", size=3), bombs.padded(b"x=1"), bombs.end()]))
    assert check_archive(data).unpacked_bytes == near + 3
    monkeypatch.setattr(archive, "UNPACKED_MAX_BYTES", near)
    _refused(data, "unpacks to over")


# -- what is refused --------------------------------------------------------------------------
BOMBS = {
    "PAX": (tarfile.XHDTYPE, "PAX header of 536,870,912 bytes, over the limit of 64 KiB"),
    "PAX global": (tarfile.XGLTYPE, "PAX global header of 536,870,912 bytes"),
    "GNU long name": (tarfile.GNUTYPE_LONGNAME, "GNU long-name header of 536,870,912 bytes"),
    "GNU long link": (tarfile.GNUTYPE_LONGLINK, "GNU long-link header of 536,870,912 bytes"),
}


@pytest.mark.parametrize("kind", list(BOMBS))
def test_a_header_bomb_is_refused_at_its_header_in_little_time_and_memory(kind, tmp_path):
    typeflag, message = BOMBS[kind]
    data = bombs.header_bomb(typeflag)
    assert len(data) < 600_000
    tracemalloc.start()
    started = time.monotonic()
    try:
        _refused(data, message)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 0.5 and peak < 2 << 20, (time.monotonic() - started, peak)
    (tmp_path / "w.tar.gz").write_bytes(data)
    with pytest.raises(ArchiveError, match=message):
        unpack(tmp_path / "w.tar.gz", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_gzip_bombs_are_cut_off_in_little_memory():
    for data, message in ((bombs.zeros_bomb(1024), "after its end"),
                          (bombs.big_member(1024), "unpacks to over 200 MiB"),
                          (bombs.members([128, 128]), "unpacks to over 200 MiB")):
        assert len(data) < 2 << 20
        tracemalloc.start()
        try:
            _refused(data, message)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 2 << 20, peak


def _one(name: str, kind: bytes = tarfile.REGTYPE, body: bytes = b"", fmt=tarfile.PAX_FORMAT, **extra) -> bytes:
    return bombs.gz(bombs.header(name, kind, len(body), fmt, **extra) + bombs.padded(body) + bombs.end())


@pytest.mark.parametrize("data,match", [
    (_one("link", tarfile.SYMTYPE, linkname="/etc/passwd"), "link, which is not a regular file"),
    (_one("hard", tarfile.LNKTYPE, linkname="train.py"), "hard, which is not a regular file"),
    (_one("tty", tarfile.CHRTYPE), "not a regular file"),
    (_one("pipe", tarfile.FIFOTYPE), "not a regular file"),
    (_one("sparse", tarfile.GNUTYPE_SPARSE), "not a regular file"),
    (_one("/etc/cron.d/x", body=b"x"), "unsafe path: /etc/cron.d/x"),
    (_one("../escape.py", body=b"x"), "unsafe path"),
    (_one("a/../../escape.py", body=b"x"), "unsafe path"),
    (_one("d" * 300 + "/x.py", body=b"x"), "a name over 255 bytes"),
    (_one("d/" * 2100 + "x.py", body=b"x"), "a path of 4,204 bytes, over the limit of 4,096"),
    (_one(LONG, body=b"x", fmt=tarfile.GNU_FORMAT)[:-40], "not a tar.gz"),
], ids=["symlink", "hardlink", "device", "fifo", "sparse", "absolute", "dotdot", "dotdot-inner", "long-name",
        "long-path", "truncated-gzip"])
def test_unsafe_or_broken_members_are_refused(data, match):
    _refused(data, match)


def test_duplicates_files_inside_files_and_header_chains_are_refused():
    two = bombs.header("a.py", size=1) + bombs.padded(b"x")
    _refused(bombs.gz(two + two + bombs.end()), "holds a.py twice")
    _refused(bombs.gz(two + bombs.header("a.py/b.py", size=1) + bombs.padded(b"x") + bombs.end()),
             "holds a.py/b.py inside the file a.py")
    d_file = bombs.header("d", size=1) + bombs.padded(b"x")
    _refused(bombs.gz(bombs.header("d/a.py", size=1) + bombs.padded(b"x") + d_file + bombs.end()),
             "holds d as a file and as a directory")
    pax = bombs.header("././@PaxHeader", tarfile.XHDTYPE, 0)
    glob = bombs.header("././@PaxHeader", tarfile.XGLTYPE, 0)
    _refused(bombs.gz(pax + pax + two + bombs.end()), "more than one PAX header")
    _refused(bombs.gz(glob * (archive.MAX_EXTENDED + 1) + two + bombs.end()), "over 4 extended headers")
    _refused(bombs.gz(pax + bombs.end()), "ends inside a member's headers")
    broken = bombs.header("././@PaxHeader", tarfile.XHDTYPE, 8) + bombs.padded(b"99 path=")
    _refused(bombs.gz(broken + two + bombs.end()), "PAX header's record is broken")
    block = bytearray(two[:512])
    block[0] ^= 1  # the checksum no longer matches
    _refused(bombs.gz(bytes(block) + two[512:] + bombs.end()), "checksum is wrong")


def test_what_is_not_a_tar_gz_is_refused():
    _refused(b"", "it is empty")
    _refused(b"not an archive", "not a tar.gz")
    _refused(bombs.gz(b"x" * 512), "checksum is wrong")
    _refused(bombs.gz(bombs.header("a.py", size=10) + b"x" * 5), "truncated")


def test_over_the_entry_limit_is_refused(monkeypatch):
    monkeypatch.setattr(archive, "MAX_ENTRIES", 50)
    many = b"".join(bombs.header(f"f{i}.py") for i in range(51))
    _refused(bombs.gz(many + bombs.end()), "over 50 files")


def test_a_refused_unpack_leaves_nothing_behind(tmp_path):
    good = bombs.header("ok.py", size=2) + bombs.padded(b"ok")
    bad = bombs.header("../escape.py", size=1) + bombs.padded(b"x")
    (tmp_path / "w.tar.gz").write_bytes(bombs.gz(good + bad + bombs.end()))
    with pytest.raises(ArchiveError, match="unsafe path"):
        unpack(tmp_path / "w.tar.gz", tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not (tmp_path / "escape.py").exists()


def test_pack_refuses_what_the_reader_would(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x")
    os.mkfifo(src / "pipe")
    with pytest.raises(ArchiveError, match="not a regular file or directory"):
        pack(src)


def test_mutated_headers_are_refused_with_one_line_or_unpack_inside_the_directory(tmp_path):
    """Fields of valid headers changed at random (checksums made right again): the reader
    either refuses with an ArchiveError or unpacks everything under its directory."""
    import random

    rng = random.Random(20260521)
    parts = [bombs.header("././@PaxHeader", tarfile.XHDTYPE, 30),
             bombs.padded(bombs.pax_record("path", b"d/" + b"n" * 17)),
             bombs.header("x.py", size=700), bombs.padded(b"y" * 700), bombs.header("d", tarfile.DIRTYPE),
             bombs.header("././@LongLink", tarfile.GNUTYPE_LONGNAME, 20), bombs.padded(b"L" * 19 + b"\0"),
             bombs.header("z", size=3), bombs.padded(b"abc"), bombs.end()]
    heads = [sum(len(p) for p in parts[:i]) for i in (0, 2, 4, 5, 7)]
    raw = b"".join(parts)
    for n in range(1500):
        m = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            m[rng.choice(heads) + rng.choice([rng.randrange(512), 0, 124, 130, 156, 257, 345])] = rng.choice(
                [0, 0x20, 0x2E, 0x2F, 0x30, 0x37, 0x80, 0xFF, rng.randrange(256), *b"xgLK1257"])
        for h in heads:
            m[h + 148:h + 156] = b" " * 8
            m[h + 148:h + 156] = b"%06o\0 " % sum(m[h:h + 512])
        (tmp_path / "w.tar.gz").write_bytes(bombs.gz(bytes(m)))
        dest = tmp_path / f"out{n}"
        try:
            unpack(tmp_path / "w.tar.gz", dest)
        except ArchiveError as exc:
            assert "\n" not in str(exc)
            assert not dest.exists()
            continue
        assert all(p.resolve().is_relative_to(dest.resolve()) and not p.is_symlink() for p in dest.rglob("*"))
        shutil.rmtree(dest)
