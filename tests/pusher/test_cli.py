"""The `pusher` command: check, migrate and a disabled run."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from importlib.metadata import version
from typing import Any

from aiohttp import web
from fleetcore.protocol import INGEST_PATH, BatchType, WireFormat
from pusher.delivery import IngestClient, encode, user_agent
from pusher.errors import DeliveryError
from pusher.settings import Settings

from tests.fix_pusher import pusher_env, start_pusher_process


async def test_check_passes_with_a_good_configuration_and_fails_with_a_bad_token(
    pusher_settings: Settings,
) -> None:
    """`pusher check` exits 0 when the database is migrated and ingestd accepts the token,
    and 1 naming the cause when ingestd refuses it; the token is never printed."""
    good = await start_pusher_process(pusher_env(pusher_settings), "check", capture=True)
    out, _ = await good.communicate()
    assert good.returncode == 0, out
    bad_settings = replace(pusher_settings, token="flt_wrong-token-value")
    bad = await start_pusher_process(pusher_env(bad_settings), "check", capture=True)
    out, _ = await bad.communicate()
    assert bad.returncode == 1 and b"unauthorized" in out
    assert b"flt_wrong-token-value" not in out


async def test_configuration_error_exits_2_naming_the_variable(pusher_settings: Settings) -> None:
    """A missing variable stops the command with exit status 2 and names it."""
    env = pusher_env(pusher_settings, PUSHER_INGEST_URL="")
    proc = await start_pusher_process(env, "run", capture=True)
    out, _ = await proc.communicate()
    assert proc.returncode == 2 and b"PUSHER_INGEST_URL" in out


async def test_run_when_disabled_exits_0_without_pushing(pusher_settings: Settings) -> None:
    """With PUSHER_PUSH_ENABLED=false `pusher run` logs that pushing is off and exits 0."""
    env = pusher_env(pusher_settings, PUSHER_PUSH_ENABLED="false")
    proc = await start_pusher_process(env, "run", capture=True)
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and b"push_disabled" in out


async def test_requests_carry_the_real_version_in_the_user_agent(aiohttp_server: Any) -> None:
    """The pusher introduces itself with its installed version (not a hard-coded one), so
    ingestd's operators can tell gateways' releases apart in access logs."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers.get("User-Agent", ""))
        return web.json_response({"error": "unauthorized"}, status=401)

    app = web.Application()
    app.router.add_post(INGEST_PATH, record)
    server = await aiohttp_server(app)
    async with IngestClient(str(server.make_url(INGEST_PATH)), "t0ken", timeout_s=5) as client:
        with contextlib.suppress(DeliveryError):
            empty = await encode(b'{"items":[]}', WireFormat.JSON, 1)
            await client.send(BatchType.SITES, empty, None, rows=0)
    assert seen == [user_agent()]
    assert user_agent().startswith(f"fleet-pusher/{version('fleet-pusher')} ")
