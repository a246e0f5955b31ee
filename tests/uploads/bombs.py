"""Hostile and odd archives, built byte by byte (tarfile writes the 512-byte headers; the
gzip stream is ours), for the archive reader's tests and the upload API's.

A large payload is made of concatenated gzip members (a valid gzip file, as gzip(1)
writes one), each the same FILLER_MIB MiB compressed once, so that a 512 MiB header
costs half a megabyte to send and a fraction of a second to build.
"""
from __future__ import annotations

import functools
import tarfile
import zlib

FILLER_MIB = 64


def gz(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


@functools.cache
def filler(byte: bytes) -> bytes:
    """FILLER_MIB MiB of `byte`, as one gzip member."""
    return gz(byte * (FILLER_MIB << 20))


def header(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, fmt=tarfile.USTAR_FORMAT, **extra) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, size, 0o644
    for key, value in extra.items():
        setattr(info, key, value)
    return info.tobuf(format=fmt)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def end() -> bytes:
    return bytes(1024)


def pax_record(key: str, value: bytes) -> bytes:
    body = f" {key}=".encode() + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n += 1
    return str(n).encode() + body


def header_bomb(kind: bytes, mib: int = 512, members: int = 1) -> bytes:
    """`members` files, each behind an extended header (PAX 'x', GNU 'L', ...) whose payload
    is `mib` MiB: what took the old check to 1.2 GB and the event loop with it."""
    assert mib % FILLER_MIB == 0
    out = []
    for i in range(members):
        name = "././@PaxHeader" if kind in (tarfile.XHDTYPE, tarfile.XGLTYPE) else "././@LongLink"
        out.append(gz(header(name, kind, mib << 20)))
        out.extend([filler(b"9")] * (mib // FILLER_MIB))
        out.append(gz(header(f"m{i}.py", size=0)))
    out.append(gz(end()))
    return b"".join(out)


def zeros_bomb(mib: int = 1024) -> bytes:
    """gzip of `mib` MiB of zeros: a tar that ends at its first block, then goes on."""
    return b"".join([filler(b"\x00")] * (mib // FILLER_MIB))


def big_member(mib: int = 1024) -> bytes:
    """One file whose header says `mib` MiB, all of them there."""
    return b"".join([gz(header("weights.bin", size=mib << 20)), *[filler(b"\x00")] * (mib // FILLER_MIB),
                     gz(end())])


def members(sizes_mib: list[int]) -> bytes:
    """Files of the given sizes, each one within the unpacked limit, together over it."""
    out = []
    for i, mib in enumerate(sizes_mib):
        assert mib % FILLER_MIB == 0
        out.append(gz(header(f"part{i}.bin", size=mib << 20)))
        out.extend([filler(b"\x01")] * (mib // FILLER_MIB))
    out.append(gz(end()))
    return b"".join(out)
