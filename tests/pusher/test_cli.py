"""The `pusher` command: check, migrate and a disabled run."""

from __future__ import annotations

from dataclasses import replace

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
    env = pusher_env(pusher_settings, FLEET_INGEST_URL="")
    proc = await start_pusher_process(env, "run", capture=True)
    out, _ = await proc.communicate()
    assert proc.returncode == 2 and b"FLEET_INGEST_URL" in out


async def test_run_when_disabled_exits_0_without_pushing(pusher_settings: Settings) -> None:
    """With FLEET_PUSH_ENABLED=false `pusher run` logs that pushing is off and exits 0."""
    env = pusher_env(pusher_settings, FLEET_PUSH_ENABLED="false")
    proc = await start_pusher_process(env, "run", capture=True)
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and b"push_disabled" in out
