"""Where no sandbox can start, the API refuses script jobs and their uploads with one 409
line, before anything is written (services.script_gate); a server started with
--unsandboxed-scripts takes them. The sandbox's status is injected into the app
(`create_app(sandbox_status=...)`), as the embedded server injects its probe's."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api_helpers import FakeClock, seed
from scheduler.api import create_app
from scheduler.runtime.archive import pack
from scheduler.services.script_gate import SandboxStatus

OCTET = {"Content-Type": "application/octet-stream"}
WHY = "bwrap cannot create namespaces here (setting up uid map: Permission denied)"
NO_SANDBOX = SandboxStatus(available=False, why=WHY)
ACCEPTED = SandboxStatus(available=False, why=WHY, unsandboxed_allowed=True)


@pytest.fixture
def world(sqlite_url, tmp_path):
    from scheduler.services import accounts, auth
    from scheduler.store import init_db, make_engine, session_scope

    engine = make_engine(sqlite_url)
    init_db(engine)
    seeded = seed(engine, FakeClock())
    with session_scope(engine) as s:
        accounts.add_account(s, "lab", weight=1, allow_scripts=True)
    with session_scope(engine) as s:
        seeded.tokens["lab"] = auth.issue_token(s, account="lab", name="lab", expires_s=None, at=seeded.clock())
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text("print('hello')\n")
    seeded.archive = pack(work)
    seeded.results = tmp_path / "results"
    seeded.results.mkdir()
    yield seeded
    engine.dispose()


def client(world, status, role: str = "lab") -> TestClient:
    app = create_app(world.engine, clock=world.clock, results_dir=str(world.results),
                     sandbox_status=(lambda: status) if status is not None else None)
    return TestClient(app, headers={"Authorization": f"Bearer {world.tokens[role]}"})


def files_under(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def script(upload: str) -> dict:
    return {"model": "script", "slices": 1, "command": ["python", "train.py"], "upload": upload}


def test_no_sandbox_refuses_uploads_and_script_jobs_with_one_409_line_writing_nothing(world):
    before = world.counts()
    with client(world, NO_SANDBOX) as c:
        r = c.post("/v1/uploads", content=world.archive, headers=OCTET)
        assert r.status_code == 409, r.text
        detail = r.json()["detail"]
        assert detail == (f"no sandbox can start on this server's nodes ({WHY}); script jobs are refused "
                          "unless the server runs with --unsandboxed-scripts")
        r = c.post("/v1/jobs", json=script("0" * 64))  # refused before its upload is looked for
        assert r.status_code == 409 and r.json()["detail"] == detail, r.text
        assert world.counts() == before
        assert files_under(world.results) == []  # not even the account's upload folder
        # only script jobs: a hold job is taken as ever
        assert c.post("/v1/jobs", json={"model": "hold", "slices": 1, "seconds": 5}).status_code == 201


def test_a_missing_token_is_still_401_before_the_409(world):
    with client(world, NO_SANDBOX) as c:
        r = c.post("/v1/uploads", content=world.archive, headers={**OCTET, "Authorization": ""})
        assert r.status_code == 401, r.text
        r = c.post("/v1/jobs", json=script("0" * 64), headers={"Authorization": "Bearer fg_not-a-token"})
        assert r.status_code == 401, r.text
    assert files_under(world.results) == []


@pytest.mark.parametrize("status", [ACCEPTED, SandboxStatus(available=True), None],
                         ids=["no sandbox, --unsandboxed-scripts", "sandbox", "not checked"])
def test_script_jobs_are_taken_where_a_sandbox_starts_or_unsandboxed_ones_were_accepted(world, status):
    with client(world, status) as c:
        r = c.post("/v1/uploads", content=world.archive, headers=OCTET)
        assert r.status_code == 201, r.text
        r = c.post("/v1/jobs", json=script(r.json()["upload"]))
        assert r.status_code == 201, r.text
        job = c.get(f"/v1/jobs/{r.json()['id']}").json()
    assert job["model"] == "script" and job["state"] == "PENDING"


def test_the_status_is_asked_at_each_request():
    """The server's probe may change its answer (a cluster's nodes join): nothing is cached here."""
    calls = []

    def status():
        calls.append(1)
        return NO_SANDBOX if len(calls) == 1 else SandboxStatus(available=True)

    from scheduler.services.script_gate import NoSandbox, check_scripts

    with pytest.raises(NoSandbox, match="--unsandboxed-scripts"):
        check_scripts(status)
    check_scripts(status)
    check_scripts(None)
    assert len(calls) == 2


def test_uploads_allowed_asks_the_upload_checks_alone_and_writes_nothing(world):
    """What `fairgpu submit script` asks before it packs: POST /uploads's checks, no body."""
    before = world.counts()
    with client(world, NO_SANDBOX) as c:
        r = c.get("/v1/uploads/allowed")
        assert r.status_code == 409 and r.json()["detail"].startswith("no sandbox can start"), r.text
    with client(world, SandboxStatus(available=True)) as c:
        assert c.get("/v1/uploads/allowed").json() == {"allowed": True}
        r = c.get("/v1/uploads/allowed", params={"account": "nowhere"})
        assert r.status_code == 404, r.text
        assert c.get("/v1/uploads/allowed", headers={"Authorization": ""}).status_code == 401
    assert world.counts() == before and files_under(world.results) == []
