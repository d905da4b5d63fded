"""--from-debootstrap: a Debian root file system made by mmdebstrap (or debootstrap, as root) on the host."""

from __future__ import annotations

import os
import shutil

import trio

from plash import config
from plash.engine.children import run_child, unpack_child
from plash.engine.events import Event, Kind, note
from plash.engine.fetch import http
from plash.errors import FetchError, PlashError
from plash.launch.userns import id_ranges, privileged

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.events import Emit
    from plash.engine.layers import Produce
    from plash.store.staging import Staging


def command(suite: str, mirror: str) -> tuple[list[str], bool]:
    """The host command that writes a Debian root file system tarball to stdout (True) or into {dir} (False)."""
    if shutil.which("mmdebstrap"):
        if privileged():
            mode = "root"
        elif id_ranges() is not None:
            mode = "unshare"
        else:
            if not shutil.which("fakechroot"):
                raise PlashError("--from-debootstrap without a subuid range needs fakechroot and fakeroot",
                                 hint="apt-get install fakechroot fakeroot, or give this user a range in /etc/subuid")
            mode = "fakechroot"
        # not --quiet: its stage lines (I: ...) are the progress of a job of minutes
        return ["mmdebstrap", "--variant=minbase", f"--mode={mode}", suite, "-", mirror], True
    if privileged() and shutil.which("debootstrap"):
        return ["debootstrap", "--variant=minbase", suite, "{dir}", mirror], False
    raise PlashError("--from-debootstrap needs mmdebstrap (or debootstrap, as root) on the host",
                     hint="apt-get install mmdebstrap")


async def check_suite(suite: str, mirror: str) -> None:
    """Fail early, and say so, when the mirror has no such suite (mmdebstrap's own error is obscure)."""
    if not mirror.startswith(("http://", "https://")):
        return  # file:, copy: or mirror lists: mmdebstrap knows best
    url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    async with http.client() as c:
        try:
            await http.get_bytes(c, url)
        except FetchError as e:
            if e.status == 404:
                raise PlashError(f"--from-debootstrap: unknown suite {suite!r}: {mirror} has no dists/{suite}/Release",
                                 hint="use a suite or codename the mirror has, e.g. bookworm, trixie, stable") from None
            raise PlashError(f"--from-debootstrap: cannot reach the mirror: {e.message}") from None


def producer(suite: str, mirror: str | None, emit: Emit) -> Produce:
    async def produce(staging: Staging) -> None:
        await debootstrap(suite, mirror or config.default_mirror(), staging.upper, emit)

    return produce


async def debootstrap(suite: str, mirror: str, root: str, emit: Emit) -> None:
    argv, streams = command(suite, mirror)
    await check_suite(suite, mirror)
    emit(note(f"creating a {suite} root file system with {argv[0]} (this takes a while)"))
    if not streams:
        code = await run_child([a.replace("{dir}", root) for a in argv])
        if code:
            raise PlashError(f"debootstrap failed for suite {suite} (exit {code})")
        return
    r, w = os.pipe()
    codes: dict[str, int] = {}
    unpack_error: list[PlashError] = []
    async with trio.open_nursery() as nursery:

        async def make() -> None:
            try:
                if getattr(emit, "wants_output", False):  # its stage lines on a row of their own, as a step's
                    label = f"{argv[0]} {suite}"
                    emit(Event(Kind.STEP_START, label, text=" ".join(argv[:4])))
                    try:
                        codes["make"] = await run_child(
                            argv, stdout=w, on_line=lambda line: emit(Event(Kind.STEP_OUTPUT, label, text=line)))
                    except BaseException:
                        emit(Event(Kind.STEP_DONE, label, done=-1, text="cancelled"))
                        raise
                    emit(Event(Kind.STEP_DONE, label, done=codes["make"]))
                else:
                    codes["make"] = await run_child(argv, stdout=w)
            finally:
                os.close(w)

        async def unpack() -> None:
            try:
                await unpack_child(root, r, f"{argv[0]} output")
            except PlashError as e:
                unpack_error.append(e)  # reported below, unless the maker failed first
            finally:
                os.close(r)

        nursery.start_soon(make)
        nursery.start_soon(unpack)
    if codes.get("make"):
        raise PlashError(f"{argv[0]} failed for suite {suite} (exit {codes['make']}; its messages are above)")
    if unpack_error:
        raise unpack_error[0]
