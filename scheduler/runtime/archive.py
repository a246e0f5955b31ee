"""A script job's working directory as it travels: packed by the CLI, checked by the server
as it arrives, unpacked by the task. One reader of ours walks the tar on every side;
``tarfile`` only writes (``pack``) and never parses an archive.

Invariants:
- A working directory travels as a gzip'd tar (ustar, with PAX or GNU long-name headers)
  of regular files and directories only: no links, devices, absolute paths, '..', path
  over PATH_MAX_BYTES or MAX_DEPTH directories deep, or path listed twice or inside a file.
- Limits: ARCHIVE_MAX_BYTES packed; UNPACKED_MAX_BYTES unpacked, counting file contents
  and the payload of every extended header (PAX 'x'/'g', GNU 'L'/'K'); MAX_ENTRIES paths
  (files and directories, listed or implied by a member's path); HEADER_MAX_BYTES per
  extended header and MAX_EXTENDED of them before one member; TRAILER_MAX_BYTES after the
  end-of-archive block. Together they bound the inflated stream (STREAM_MAX_BYTES, also
  enforced on its own against gzip bombs).
- The archive is read as a stream (``Reader.feed``, push-based): gzip is inflated at most
  INFLATE_STEP bytes at a time, and a size is checked against its limit from the header
  that declares it, before a byte of what it declares is read. Memory held: one extended
  header's payload (at most HEADER_MAX_BYTES) and a 16-byte digest per path.
- Anything unsafe, malformed or over a limit is ``ArchiveError`` with one line. The CLI
  checks what it packed before it sends, the server as the body arrives, the task again
  as it unpacks (a refused unpack leaves no directory behind).
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

ARCHIVE_MAX_BYTES = 20 << 20
UNPACKED_MAX_BYTES = 200 << 20
MAX_ENTRIES = 10_000
HEADER_MAX_BYTES = 64 << 10
MAX_EXTENDED = 4
PATH_MAX_BYTES = 4096
NAME_MAX_BYTES = 255
MAX_DEPTH = 100
TRAILER_MAX_BYTES = 1 << 20
BLOCK = 512
# every member: its header, MAX_EXTENDED headers before it, and each one's padding
STREAM_MAX_BYTES = UNPACKED_MAX_BYTES + (MAX_ENTRIES + 1) * (MAX_EXTENDED + 1) * 2 * BLOCK + TRAILER_MAX_BYTES
INFLATE_STEP = 64 << 10
FEED_STEP = 16 << 10
SKIPPED = (".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache")

FILE, DIR, _IMPLIED = "file", "directory", "implied"
_FILE_TYPES, _DIR_TYPES = (b"0", b"\x00", b"7"), (b"5",)
_EXTENDED = {b"x": "PAX", b"g": "PAX global", b"L": "GNU long-name", b"K": "GNU long-link"}
_ZERO = bytes(BLOCK)


class ArchiveError(ValueError):
    """A working directory that cannot travel (one line)."""


@dataclass(frozen=True)
class ArchiveInfo:
    sha256: str
    packed_bytes: int
    unpacked_bytes: int
    entries: int


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


# -- packing (the CLI) --------------------------------------------------------------------------
def pack(directory: str | os.PathLike) -> bytes:
    """The CLI's side: `directory` as a gzip'd tar (skipping .git, caches and virtualenvs),
    checked by the same reader as the server's before it is returned."""
    root = Path(directory)
    if not root.is_dir():
        raise ArchiveError(f"working directory {directory} is not a directory")
    buf = io.BytesIO()
    total = entries = 0
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if any(part in SKIPPED for part in rel.parts) or path.suffix == ".pyc":
                continue
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise ArchiveError(f"working directory holds {rel}, which is not a regular file or directory")
            entries += 1
            total += path.stat().st_size if path.is_file() else 0
            if total > UNPACKED_MAX_BYTES or entries > MAX_ENTRIES:
                raise ArchiveError(f"working directory {directory} is over the limit of {_mib(UNPACKED_MAX_BYTES)} "
                                   f"or {MAX_ENTRIES:,} files")
            tar.add(path, arcname=str(rel), recursive=False)
            if buf.tell() > ARCHIVE_MAX_BYTES:
                break
    data = buf.getvalue()
    if len(data) > ARCHIVE_MAX_BYTES:
        raise ArchiveError(f"working directory {directory} packs to over {_mib(ARCHIVE_MAX_BYTES)} "
                           f"(the limit); leave data sets out and read them from shared storage")
    check_archive(data)
    return data


# -- checking (the server) and unpacking (the task) ---------------------------------------------
def check_archive(data: bytes) -> ArchiveInfo:
    """Refuse anything but a safe, bounded tar.gz (``Reader`` over the whole of ``data``)."""
    reader = Reader()
    reader.feed(data)
    return reader.finish()


def unpack(archive: Path, dest: Path, *, read_step: int = 1 << 20) -> None:
    """The task's side: a fresh copy of the working directory at `dest`, checked again as it
    is written; a refused archive leaves no `dest`."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True, mode=0o700)
    sink = _Extract(dest)
    try:
        with open(archive, "rb") as f:
            reader = Reader(sink)
            while chunk := f.read(read_step):
                reader.feed(chunk)
            reader.finish()
    except BaseException:
        sink.close()
        shutil.rmtree(dest, ignore_errors=True)
        raise


class Reader:
    """A tar.gz checked as it arrives: ``feed`` the compressed bytes in pieces of any size,
    then ``finish`` for its ``ArchiveInfo``. Each member is handed to ``sink`` (``member``,
    then its contents through ``data``, then ``end``), if one is given."""

    def __init__(self, sink=None) -> None:
        self._sha = hashlib.sha256()
        self._packed = self._inflated = 0
        self._gzip = zlib.decompressobj(wbits=31)
        self._gzip_started = False
        self._tar = _Walk(sink)

    def feed(self, data: bytes) -> None:
        self._packed += len(data)
        if self._packed > ARCHIVE_MAX_BYTES:
            raise ArchiveError(f"working directory archive is over the limit of {_mib(ARCHIVE_MAX_BYTES)} packed")
        self._sha.update(data)
        view = memoryview(data)
        for i in range(0, len(view), FEED_STEP):  # so each step's unconsumed input stays small
            self._feed(view[i:i + FEED_STEP])

    def _feed(self, data) -> None:
        while data:
            if self._gzip.eof:  # a further gzip member (as gzip(1) concatenates them), after any zero padding
                data = bytes(data).lstrip(b"\x00")
                if not data:
                    return
                self._gzip = zlib.decompressobj(wbits=31)
            self._gzip_started = True
            try:
                out = self._gzip.decompress(data, INFLATE_STEP)
            except zlib.error as exc:
                raise ArchiveError(f"working directory archive is not a tar.gz: {exc}") from None
            data = self._gzip.unconsumed_tail or (self._gzip.unused_data if self._gzip.eof else b"")
            self._inflate(out)
            while len(out) == INFLATE_STEP and not data and not self._gzip.eof:  # output still pending
                out = self._gzip.decompress(b"", INFLATE_STEP)
                data = self._gzip.unconsumed_tail or (self._gzip.unused_data if self._gzip.eof else b"")
                self._inflate(out)

    def _inflate(self, out: bytes) -> None:
        self._inflated += len(out)
        if self._inflated > STREAM_MAX_BYTES:
            raise ArchiveError(f"working directory archive inflates to over {_mib(STREAM_MAX_BYTES)} (the limit)")
        if out:
            self._tar.feed(out)

    def finish(self) -> ArchiveInfo:
        if not self._gzip_started:
            raise ArchiveError("working directory archive is not a tar.gz: it is empty")
        if not self._gzip.eof:
            raise ArchiveError("working directory archive is not a tar.gz: its gzip stream is truncated")
        self._tar.finish()
        return ArchiveInfo(self._sha.hexdigest(), self._packed, self._tar.unpacked, self._tar.entries)


class _Walk:
    """The tar inside, block by block (push-based). Each step waits for exactly the bytes
    it needs: a 512-byte header, an extended header's padded payload (its size checked
    first), or a member's contents, streamed to the sink and never held."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.unpacked = self.entries = 0
        self._buf = bytearray()
        self._need = BLOCK
        self._handler = self._header
        self._stream_left = self._skip_left = 0  # a member's contents still to pass on, then its padding
        self._trailer: int | None = None  # bytes seen after the end-of-archive block
        self._pending: dict[bytes, bytes | dict] = {}  # extended headers waiting for their member
        self._run = 0  # extended headers since the last member
        self._seen: dict[bytes, str] = {}  # digest of each path -> FILE, DIR or _IMPLIED (a parent not listed)
        self._root_seen = False

    def feed(self, data: bytes) -> None:
        view, pos = memoryview(data), 0
        while pos < len(view):
            if self._trailer is not None:
                self._trailer += len(view) - pos
                if self._trailer > TRAILER_MAX_BYTES:
                    raise ArchiveError("working directory archive holds over "
                                       f"{_mib(TRAILER_MAX_BYTES)} after its end (the limit)")
                return
            if self._stream_left:
                take = min(self._stream_left, len(view) - pos)
                if self.sink is not None:
                    self.sink.data(view[pos:pos + take])
                pos += take
                self._stream_left -= take
                if not self._stream_left:
                    self._end_member()
                continue
            if self._skip_left:
                take = min(self._skip_left, len(view) - pos)
                pos += take
                self._skip_left -= take
                continue
            take = min(self._need - len(self._buf), len(view) - pos)
            self._buf += view[pos:pos + take]
            pos += take
            if len(self._buf) == self._need:
                self._step()

    def _step(self) -> None:
        block = bytes(self._buf)
        self._buf.clear()
        self._need, handler = BLOCK, self._handler
        self._handler = self._header
        handler(block)

    def _expect(self, n: int, handler) -> None:
        self._need, self._handler = n, handler
        if n == 0:
            self._step()

    def finish(self) -> None:
        if self._trailer is None and (self._buf or self._stream_left or self._skip_left or self._pending
                                      or self._handler != self._header):
            raise ArchiveError("working directory archive is truncated")

    # -- one header ----------------------------------------------------------------------------
    def _header(self, block: bytes) -> None:
        if block == _ZERO:
            if self._pending:
                raise ArchiveError("working directory archive ends inside a member's headers")
            self._trailer = 0
            return
        _verify_checksum(block)
        kind, size = block[156:157], _number(block[124:136])
        if size < 0:
            raise ArchiveError("working directory archive is malformed: a header holds a negative size")
        if kind in _EXTENDED:
            self._extended(kind, size)
            return
        path = self._path(block)
        if kind == b"\x00" and path.endswith("/"):
            kind = b"5"  # an old-style directory
        pax = self._pending.get(b"x", {})
        if "size" in pax:
            size = _pax_number(pax["size"], "size")
        self._pending.clear()
        self._run = 0
        if kind in _DIR_TYPES:
            if size:
                raise ArchiveError(f"working directory archive is malformed: directory {_show(path)} has contents")
            member = DIR
        elif kind in _FILE_TYPES:
            member = FILE
        else:
            raise ArchiveError(f"working directory archive holds {_show(path)}, which is not a regular file "
                               "or directory")
        parts = _safe_parts(path)
        self._count(size)
        if not parts:  # the directory itself ("." or "./"), once
            if member == FILE:
                raise ArchiveError(f"working directory archive holds an unsafe path: {_show(path)}")
            if self._root_seen:
                raise ArchiveError(f"working directory archive holds {_show(path)} twice")
            self._root_seen = True
            return
        self._remember(parts, member, path)
        if self.sink is not None:
            self.sink.member(member, parts, size, _number(block[100:108]), _mtime(block, pax))
        if size:
            self._stream_left, self._skip_left = size, _padded(size) - size
        else:
            self._end_member()

    def _end_member(self) -> None:
        if self.sink is not None:
            self.sink.end()

    def _extended(self, kind: bytes, size: int) -> None:
        what = _EXTENDED[kind]
        if size > HEADER_MAX_BYTES:
            raise ArchiveError(f"working directory archive has a {what} header of {size:,} bytes, over the "
                               f"limit of {HEADER_MAX_BYTES >> 10} KiB")
        self._run += 1
        if kind in self._pending:
            raise ArchiveError(f"working directory archive is malformed: more than one {what} header for a member")
        if self._run > MAX_EXTENDED:
            raise ArchiveError(f"working directory archive is malformed: over {MAX_EXTENDED} extended headers "
                               "before a member")
        self._count(size)

        def payload(data: bytes) -> None:
            data = data[:size]
            if kind == b"g":
                _pax_records(data)  # checked, and then left out: it names no member
            elif kind == b"x":
                self._pending[kind] = _pax_records(data)
            else:
                self._pending[kind] = data.split(b"\x00", 1)[0]

        self._expect(_padded(size), payload)

    def _path(self, block: bytes) -> str:
        pax, long_name = self._pending.get(b"x", {}), self._pending.get(b"L")
        if "path" in pax:
            raw = pax["path"]
        elif long_name is not None:
            raw = long_name
        else:
            raw = _field(block[0:100])
            prefix = _field(block[345:500]) if block[257:263] == b"ustar\x00" else b""
            if prefix:
                raw = prefix + b"/" + raw
        if len(raw) > PATH_MAX_BYTES:
            raise ArchiveError(f"working directory archive holds a path of {len(raw):,} bytes, over the limit "
                               f"of {PATH_MAX_BYTES:,}")
        return raw.decode("utf-8", "surrogateescape")

    def _count(self, size: int) -> None:
        self.unpacked += size
        if self.unpacked > UNPACKED_MAX_BYTES:
            raise ArchiveError(f"working directory archive unpacks to over {_mib(UNPACKED_MAX_BYTES)} (the limit)")

    def _remember(self, parts: list[str], kind: str, path: str) -> None:
        """Each path once, never inside a file; a parent not listed is a directory unpack will
        make, so it counts as an entry too."""
        if len(parts) > MAX_DEPTH:
            raise ArchiveError(f"working directory archive holds a path over {MAX_DEPTH} directories deep: "
                               f"{_show(path)}")
        digest = hashlib.blake2b(digest_size=16)
        for i, part in enumerate(parts):
            digest.update(part.encode("utf-8", "surrogateescape") + b"\x00")
            key, last = digest.copy().digest(), i == len(parts) - 1
            seen = self._seen.get(key)
            if not last:
                if seen == FILE:
                    raise ArchiveError(f"working directory archive holds {_show(path)} inside the file "
                                       f"{_show('/'.join(parts[:i + 1]))}")
                if seen is None:
                    self._add(key, _IMPLIED)
            elif seen is None:
                self._add(key, kind)
            elif seen == _IMPLIED and kind == DIR:
                self._seen[key] = DIR
            elif seen == _IMPLIED:
                raise ArchiveError(f"working directory archive holds {_show(path)} as a file and as a directory")
            else:
                raise ArchiveError(f"working directory archive holds {_show(path)} twice")

    def _add(self, key: bytes, kind: str) -> None:
        self._seen[key] = kind
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise ArchiveError(f"working directory archive holds over {MAX_ENTRIES:,} files (the limit)")


# -- fields -------------------------------------------------------------------------------------
def _show(path: str) -> str:
    return path[:100].encode("unicode_escape", "backslashreplace").decode("ascii")


def _field(raw: bytes) -> bytes:
    return raw.split(b"\x00", 1)[0]


def _number(raw: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 (first byte 0x80 or 0xff)."""
    if raw[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(raw[1:], "big")
        return value - (1 << (8 * (len(raw) - 1))) if raw[0] == 0xFF else value
    text = _field(raw).strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise ArchiveError("working directory archive is malformed: a header holds a bad number") from None


def _verify_checksum(block: bytes) -> None:
    try:
        stored = _number(block[148:156])
    except ArchiveError:
        stored = None
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - 2 * sum(b for b in block[:148] + block[156:] if b > 127)
    if stored not in (unsigned, signed):
        raise ArchiveError("working directory archive is not a tar.gz: a tar header's checksum is wrong")


def _pax_records(data: bytes) -> dict[str, bytes]:
    """PAX records ("<length> <key>=<value>\\n"), strictly; a NUL ends them (padding)."""
    out, pos = {}, 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos, pos + 12)
        length = data[pos:space]
        if space < 0 or not length.isdigit() or int(length) <= space - pos + 1 or pos + int(length) > len(data):
            raise ArchiveError("working directory archive is malformed: a PAX header's record is broken")
        record = data[space + 1:pos + int(length)]
        key, eq, value = record.partition(b"=")
        if not eq or not record.endswith(b"\n"):
            raise ArchiveError("working directory archive is malformed: a PAX header's record is broken")
        out[key.decode("utf-8", "replace")] = value[:-1]
        pos += int(length)
    return out


def _pax_number(raw: bytes, key: str) -> int:
    if not raw.isdigit():
        raise ArchiveError(f"working directory archive is malformed: a PAX {key} is not a number")
    return int(raw)


def _mtime(block: bytes, pax: dict) -> float:
    try:
        return float(pax["mtime"]) if "mtime" in pax else float(_number(block[136:148]))
    except (ValueError, ArchiveError):
        return 0.0


def _safe_parts(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if path.startswith("/") or ".." in parts or "\x00" in path:
        raise ArchiveError(f"working directory archive holds an unsafe path: {_show(path)}")
    if any(len(p.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES for p in parts):
        raise ArchiveError(f"working directory archive holds a name over {NAME_MAX_BYTES} bytes: {_show(path)}")
    return parts


class _Extract:
    """The task's sink: members written under `dest` (directories 0700, files 0600, or 0700
    when their owner could execute them), never through a link (the archive holds none, and
    each file is created anew)."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self._fd: int | None = None
        self._mtime = 0.0
        self._path: Path | None = None

    def member(self, kind: str, parts: list[str], size: int, mode: int, mtime: float) -> None:
        target = self.dest.joinpath(*parts)
        if kind == DIR:
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._path = None
            return
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(target, flags, 0o700 if mode & 0o100 else 0o600)
        self._path, self._mtime = target, mtime

    def data(self, chunk) -> None:
        while chunk:
            chunk = chunk[os.write(self._fd, chunk):]

    def end(self) -> None:
        self.close()
        if self._path is not None:
            os.utime(self._path, (self._mtime, self._mtime))
            self._path = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
