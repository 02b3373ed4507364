"""HTTP routes of accounts (R19–R21): sign-up, two-step sign-in, forgotten
password, refresh, sign-out, sessions, and associating a child (R20).

The steps before a session exists take no token; each answers in the
language of the request (``Accept-Language``) and is throttled by
chat.accounts.throttle.  docs/protocol.md §Accounts lists them.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from chat.accounts.service import Client
from chat.app import App
from chat.errors import ChatError
from chat.frames import Fields, dumps
from chat.people import Actor
from chat.storage.models import Organisation
from chat.web.params import json_body, language
from chat.web.responses import error_response

EMAIL_LIMIT = 254
CODE_LIMIT = 16


def client_of(request: Request) -> Client:
    return Client(address=request.client.host if request.client else None,
                  user_agent=request.headers.get("user-agent", ""))


def public(handler: Callable[[App, Fields, Client], Awaitable[Any]]) -> Callable:
    """A step taken before signing in: JSON in, JSON or a domain error out."""

    async def route(request: Request) -> Response:
        try:
            fields = await json_body(request)
            result = await handler(request.app.state.service, fields, client_of(request))
        except ChatError as exc:
            return error_response(exc, language(request))
        return Response(dumps(result), media_type="application/json")

    return route


def _email(fields: Fields) -> str:
    return fields.str("email")[:EMAIL_LIMIT]


def _code(fields: Fields) -> str:
    return fields.str("code")[:CODE_LIMIT]


async def signup(service: App, fields: Fields, client: Client) -> Any:
    return await service.accounts.signup(_email(fields), fields.str("password"), client)


async def signup_verify(service: App, fields: Fields, client: Client) -> Any:
    return await service.accounts.signup_verify(_email(fields), _code(fields), client)


async def signin(service: App, fields: Fields, client: Client) -> Any:
    return await service.accounts.signin(_email(fields), fields.str("password"), client)


async def signin_verify(service: App, fields: Fields, client: Client) -> Any:
    return await service.accounts.signin_verify(_email(fields), _code(fields), client)


async def forgot(service: App, fields: Fields, client: Client) -> Any:
    return await service.accounts.forgot(_email(fields), client)


async def reset(service: App, fields: Fields, client: Client) -> Any:
    return await service.accounts.reset(_email(fields), _code(fields), fields.str("password"), client)


async def refresh(service: App, fields: Fields, client: Client) -> Any:
    return await service.accounts.refresh(fields.str("refresh_token")[:200], client)


async def organisations(request: Request) -> Response:
    """The organisations a parent picks from to associate a child (public: codes and names)."""
    service: App = request.app.state.service
    async with service.sessions() as session:
        rows = (await session.execute(select(Organisation.code, Organisation.name).order_by(Organisation.name))).all()
    return Response(dumps({"organisations": [{"code": c, "name": n} for c, n in rows]}),
                    media_type="application/json")


async def http_signout(service: App, actor: Actor, request: Request) -> Any:
    await service.accounts.sign_out(actor)
    return {"signed_out": True}


async def http_sessions(service: App, actor: Actor, request: Request) -> Any:
    if request.method == "DELETE":
        return await service.accounts.sign_out(actor)
    return await service.accounts.list_sessions(actor)


async def http_session(service: App, actor: Actor, request: Request) -> Any:
    return await service.accounts.end_session(actor, request.path_params["session_id"][:32])


async def http_children(service: App, actor: Actor, request: Request) -> Any:
    """R20: associate a child, by details (organisation, names, date of birth, fiche
    number or permanent code) or by NIP."""
    fields = await json_body(request)
    if fields.str("nip", required=False) is not None:
        wanted = {"nip": fields.str("nip")[:40]}
    else:
        wanted = {name: fields.str(name)[:200] for name in ("organisation", "first_name", "last_name",
                                                             "date_of_birth")}
        wanted["fiche"] = fields.str("fiche", required=False)
        wanted["code_permanent"] = fields.str("code_permanent", required=False)
    return await service.children.associate(actor, wanted, client_of(request))
