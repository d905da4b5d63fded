"""The import-lxc and import-url commands: one import job each, on trio."""

from __future__ import annotations

from plash.engine.build import first_error
from plash.engine.plan import Source
from plash.store.layout import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.jobs import Emit


def run_import(store: Store, source: Source, emit: Emit, insecure: bool = False) -> int:
    """Import fresh (no cache lookup) and record the key, so later builds reuse the result."""
    import trio

    from plash.engine import jobs

    async def go() -> int:
        return await jobs.import_source(store, source, source.import_key(), emit, reuse=False, insecure=insecure)

    try:
        return trio.run(go)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    finally:
        close = getattr(emit, "close", None)
        if close:
            close()


def lxc_url(name: str, insecure: bool, digest: str | None) -> str:
    """The rootfs URL import-lxc would download (for --dry)."""
    import trio

    from plash.engine.fetch import http, lxc

    async def go() -> str:
        async with http.client() as c:
            return (await lxc.resolve(c, name, insecure=insecure, digest=digest)).url

    return trio.run(go)
