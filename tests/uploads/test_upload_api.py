"""POST /v1/uploads against a real server in its own process (tests/uploads/upload_server.py,
a real SQLite file): header and gzip bombs are refused with one line in well under 2 s,
while /healthz keeps answering in under 1 s and the server's memory stays put; a body is
read with no database transaction open, so an admin's write goes through while an upload
trickles in; a missing token (401) and an account without scripts (403) are answered
before the body is read; a refused upload leaves no file behind."""
from __future__ import annotations

import socket
import tarfile
import threading
import time

import pytest

import bombs
from scheduler.runtime.archive import pack
from upload_server import Poller, UploadServer

OCTET = {"Content-Type": "application/octet-stream"}
REFUSE_S = 2.0
HEALTHZ_S = 1.0
RSS_GROWTH = 64 << 20  # the old check grew the server by about 1 GB on one such upload


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = UploadServer(tmp_path_factory.mktemp("uploads"))
    yield srv
    srv.stop()


def _post_timed(client, data) -> tuple[object, float]:
    started = time.monotonic()
    r = client.post("/v1/uploads", content=data, headers=OCTET)
    return r, time.monotonic() - started


def _one_line_4xx(r, status: int = 422) -> str:
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert "\n" not in detail and len(detail) < 300, detail
    return detail


def _leftovers(server) -> list[str]:
    return sorted(p.name for p in (server.results / "uploads").rglob(".upload-*"))


@pytest.mark.parametrize("kind,what", [(tarfile.XHDTYPE, "PAX header"),
                                        (tarfile.GNUTYPE_LONGNAME, "GNU long-name header")])
def test_a_header_bomb_is_refused_fast_while_healthz_answers(server, kind, what):
    data = bombs.header_bomb(kind, mib=512)
    assert len(data) < 600_000
    lab = server.client("lab")
    before = server.rss_bytes()
    with Poller(server.url) as poller:
        r, took = _post_timed(lab, data)
        time.sleep(0.3)  # and a little after
    after, peak = server.rss_bytes(), server.rss_bytes("VmHWM")
    print(f"{what} bomb ({len(data):,} bytes, 512 MiB header): refused in {took:.3f} s; /healthz worst "
          f"{poller.worst:.3f} s over {len(poller.latencies)} polls; server RSS {before / 2**20:.0f} -> "
          f"{after / 2**20:.0f} MiB (peak {peak / 2**20:.0f} MiB)")
    assert what in _one_line_4xx(r)
    assert took < REFUSE_S
    assert not poller.failures and poller.worst < HEALTHZ_S, (poller.failures, poller.worst)
    assert after - before < RSS_GROWTH
    assert _leftovers(server) == []


def test_24_members_behind_large_pax_headers_are_refused_and_admin_writes_go_on(server):
    data = bombs.header_bomb(tarfile.XHDTYPE, mib=64, members=24)
    lab, admin = server.client("lab"), server.client("admin")
    answers: list = []
    sender = threading.Thread(target=lambda: answers.append(_post_timed(lab, data)))
    weights = []
    with Poller(server.url) as poller:
        sender.start()
        for weight in (2, 3, 4, 5):
            started = time.monotonic()
            r = admin.patch("/v1/admin/accounts/plain", json={"weight": weight})
            assert r.status_code == 200, r.text
            weights.append(time.monotonic() - started)
        sender.join(30)
    (r, took), = answers
    print(f"24 x 64 MiB PAX headers ({len(data):,} bytes): refused in {took:.3f} s; admin writes took at most "
          f"{max(weights):.3f} s; /healthz worst {poller.worst:.3f} s")
    assert "PAX header of 67,108,864 bytes" in _one_line_4xx(r)
    assert took < REFUSE_S and max(weights) < HEALTHZ_S and poller.worst < HEALTHZ_S
    assert admin.get("/v1/admin/accounts").json()


def test_a_slow_upload_holds_no_database_lock(server, tmp_path):
    """The body arrives in two halves with a pause between; meanwhile an admin's write and a
    submission-free read go through at once, and the upload then succeeds."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text("print('hi')\n" * 2000)
    data = pack(work)
    half_sent, go_on = threading.Event(), threading.Event()

    def body():
        yield data[:len(data) // 2]
        half_sent.set()
        go_on.wait(20)
        yield data[len(data) // 2:]

    answers: list = []
    lab, admin = server.client("lab"), server.client("admin")
    sender = threading.Thread(target=lambda: answers.append(lab.post("/v1/uploads", content=body(), headers=OCTET)))
    sender.start()
    try:
        assert half_sent.wait(10)
        time.sleep(0.3)  # the server has the first half and waits for the rest
        started = time.monotonic()
        r = admin.patch("/v1/admin/accounts/lab", json={"weight": 7})
        took = time.monotonic() - started
        assert r.status_code == 200 and r.json()["weight"] == 7, r.text
        assert took < HEALTHZ_S, took
    finally:
        go_on.set()
        sender.join(30)
    assert answers[0].status_code == 201, answers[0].text
    assert answers[0].json()["files"] == 1
    print(f"admin write during a half-sent upload: {took:.3f} s")


def test_gzip_bombs_are_refused_fast_in_little_memory(server):
    lab = server.client("lab")
    before = server.rss_bytes()
    with Poller(server.url) as poller:
        for data, message in ((bombs.zeros_bomb(1024), "after its end"),
                              (bombs.big_member(1024), "unpacks to over 200 MiB"),
                              (bombs.members([128, 128]), "unpacks to over 200 MiB")):
            r, took = _post_timed(lab, data)
            assert message in _one_line_4xx(r) and took < REFUSE_S, (r.text, took)
    after = server.rss_bytes()
    print(f"gzip bombs: /healthz worst {poller.worst:.3f} s; server RSS {before / 2**20:.0f} -> "
          f"{after / 2**20:.0f} MiB")
    assert poller.worst < HEALTHZ_S and after - before < RSS_GROWTH
    assert _leftovers(server) == []


def _answer_without_body(server, token: str | None, declared: int = 19 << 20, wait_s: float = 5.0) -> tuple[int, float]:
    """Send an upload's headers declaring `declared` bytes and only 1 KiB of them; the
    status line the server answers with, and how soon it came."""
    host, port = server.url.removeprefix("http://").split(":")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (f"POST /v1/uploads HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/octet-stream\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        started = time.monotonic()
        sock.sendall(head + bytes(1024))
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), time.monotonic() - started


def test_401_and_403_come_before_the_body(server):
    assert _answer_without_body(server, None)[0] == 401
    assert _answer_without_body(server, "not-a-token")[0] == 401
    status, took = _answer_without_body(server, server.tokens["plain"])
    assert status == 403 and took < REFUSE_S
    r = server.client("plain").post("/v1/uploads", content=b"x", headers=OCTET)
    assert "may not run scripts" in _one_line_4xx(r, 403)
    with pytest.raises(socket.timeout):  # an allowed account's upload does wait for its body
        _answer_without_body(server, server.tokens["lab"], wait_s=1.5)
    deadline = time.monotonic() + 5
    while _leftovers(server) and time.monotonic() < deadline:  # the server sees the client go away
        time.sleep(0.05)
    assert _leftovers(server) == []


def test_an_upload_over_the_size_limit_is_refused_and_leaves_nothing(server):
    import os

    data = bombs.gz(bombs.header("weights.bin", size=24 << 20) + os.urandom(24 << 20) + bombs.end())

    def body():
        for i in range(0, len(data), 1 << 20):
            yield data[i:i + (1 << 20)]

    r = server.client("lab").post("/v1/uploads", content=body(), headers=OCTET)
    assert r.status_code in (413, 422) and "limit" in r.json()["detail"], r.text
    assert _leftovers(server) == []
