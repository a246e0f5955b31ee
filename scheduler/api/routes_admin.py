"""Admin routes (admin token only): accounts, capacity, tokens and policy settings.

Thin over the same services the admin CLI uses, so both refuse the same inputs
with the same one-line messages.
"""
from __future__ import annotations

from fastapi import APIRouter, Request

from scheduler.api.deps import AdminDep, SessionDep, now
from quota.limits import TOKEN_LIFETIME
from scheduler.api.openapi import AUTH, BODY, AccountPath, NodePath, TokenPath, errors
from scheduler.api.schemas import AccountCreate, AccountUpdate, NodeCapacityBody, SettingValue, TokenCreate
from scheduler.services import accounts, auth, capacity, settings
from scheduler.services.validate import parse_duration

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/accounts", summary="The account tree with each account's limits", responses=errors(*AUTH))
async def list_accounts(session: SessionDep, _: AdminDep) -> list[dict]:
    return accounts.list_accounts(session)


@router.post("/accounts", status_code=201, summary="Add an account",
             responses=errors(*AUTH, *BODY, 404, 409))
async def add_account(body: AccountCreate, session: SessionDep, _: AdminDep) -> dict:
    accounts.add_account(session, body.name, weight=body.weight, guaranteed=body.guaranteed, cap=body.max_slices,
                         max_pending=body.max_pending, parent=body.parent, default_time_s=body.default_time_s,
                         max_time_s=body.max_time_s, allow_scripts=body.allow_scripts)
    return _account(session, body.name)


@router.patch("/accounts/{name:path}", summary="Change an account (only the fields sent)",
              responses=errors(*AUTH, *BODY, 404, 409))
async def set_account(name: AccountPath, body: AccountUpdate, session: SessionDep, _: AdminDep) -> dict:
    sent = body.model_fields_set
    if "weight" in sent and body.weight is None or "guaranteed" in sent and body.guaranteed is None:
        from scheduler.services.errors import Invalid

        raise Invalid("weight and guaranteed cannot be null")
    unset = accounts.UNSET
    accounts.set_account(
        session, name, weight=body.weight, guaranteed=body.guaranteed,
        cap=body.max_slices if "max_slices" in sent else unset,
        max_pending=body.max_pending if "max_pending" in sent else unset,
        parent=body.parent if "parent" in sent else unset,
        **{k: getattr(body, k) for k in ("default_time_s", "max_time_s", "allow_scripts") if k in sent},
    )
    return _account(session, name)


@router.delete("/accounts/{name:path}", summary="Remove an account (refused while it has jobs or children)",
               responses=errors(*AUTH, 404, 409, 422))
async def remove_account(name: AccountPath, session: SessionDep, _: AdminDep) -> dict:
    accounts.remove_account(session, name)
    return {"removed": name}


def _account(session, name: str) -> dict:
    return next(r for r in accounts.list_accounts(session) if r["account"] == name)


@router.get("/capacity", summary="The nodes and their GPU slices", responses=errors(*AUTH))
async def list_capacity(session: SessionDep, _: AdminDep) -> list[dict]:
    return capacity.list_nodes(session)


@router.put("/capacity/{node}", summary="Declare a node's GPUs", responses=errors(*AUTH, *BODY, 409))
async def set_capacity(node: NodePath, body: NodeCapacityBody, request: Request, session: SessionDep,
                       _: AdminDep) -> dict:
    capacity.set_node(session, node=node, gpus=body.gpus, slices_per_gpu=body.slices_per_gpu,
                      gpu_type=body.gpu_type, at=now(request))
    return next(r for r in capacity.list_nodes(session) if r["node"] == node)


@router.get("/tokens", summary="Every token (never the tokens themselves)", responses=errors(*AUTH))
async def list_tokens(request: Request, session: SessionDep, _: AdminDep) -> list[dict]:
    return auth.list_tokens(session, now(request))


@router.post("/tokens", status_code=201, summary="Issue a token (the raw token is in this response only)",
             responses=errors(*AUTH, *BODY, 404, 409))
async def issue_token(body: TokenCreate, request: Request, session: SessionDep, _: AdminDep) -> dict:
    at = now(request)
    expires_s = parse_duration(body.expires, TOKEN_LIFETIME) if body.expires is not None else None
    raw = auth.issue_token(session, account=body.account, name=body.name or "", expires_s=expires_s, at=at)
    return {**auth.token_to_public(auth.token_row(session, raw), body.account, at), "token": raw}


@router.delete("/tokens/{token}", summary="Revoke a token by id or prefix", responses=errors(*AUTH, 404, 409, 422))
async def revoke_token(token: TokenPath, request: Request, session: SessionDep, _: AdminDep) -> dict:
    row = auth.revoke_token(session, token, now(request))
    return auth.token_to_public(row, None, now(request)) | {"account": _name(session, row.account_id)}


def _name(session, account_id):
    from scheduler.services.directory import directory

    return directory(session).name_of(account_id) if account_id is not None else None


@router.get("/settings", summary="The policy settings", responses=errors(*AUTH))
async def all_settings(session: SessionDep, _: AdminDep) -> dict:
    return settings.all_settings(session)


@router.get("/settings/{key}", summary="One policy setting", responses=errors(*AUTH, 404))
async def get_setting(key: str, session: SessionDep, _: AdminDep) -> dict:
    values = settings.all_settings(session)
    if key not in values:
        from scheduler.services.errors import NotFound

        raise NotFound(f"unknown setting {key!r} (known: {', '.join(values)})")
    return {"key": key, "value": values[key]}


@router.put("/settings/{key}", summary="Change a policy setting", responses=errors(*AUTH, *BODY, 404, 409))
async def put_setting(key: str, body: SettingValue, session: SessionDep, _: AdminDep) -> dict:
    return {"key": key, "value": settings.set_setting(session, key, body.value)}
