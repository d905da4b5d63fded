"""The jobs of a build: import the base image, then build each missing layer.

Work inside namespaces happens in `python -m plash.launch` child processes
(this process runs trio, so it must not fork or unshare itself). Each child
runs in its own session, so cancelling kills its whole process group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import trio

from plash.engine.build import Prepared, default_mirror, say
from plash.engine.plan import Layer, Source
from plash.engine.scheduler import Job
from plash.errors import PlashError
from plash.store.layout import Store
from plash.store.staging import new_staging

LIMITS = {"import": 2, "step": 2}


def final_key(prepared: Prepared) -> str:
    return prepared.layers[-1].key if prepared.layers else prepared.base_key


def launcher(*args: str) -> list[str]:
    return [sys.executable, "-m", "plash.launch", *args]


async def _kill_group(proc: trio.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def run_child(argv: list[str], stdin: int | None = None, stdout: int | None = None) -> int:
    """Run a child process in its own session; kill its whole group if cancelled."""
    proc = await trio.run_process(
        argv,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=stdout if stdout is not None else sys.stderr.fileno(),
        check=False,
        start_new_session=True,
        deliver_cancel=_kill_group,
    )
    return proc.returncode


async def discard(path: str) -> None:
    """Delete a staging dir even while being cancelled (shielded)."""
    with trio.CancelScope(shield=True):
        await run_child(launcher("rmtree", path))


async def import_source(store: Store, source: Source, key: str, quiet: bool) -> int:
    found = store.lookup_key(key)
    if found is not None:
        return found
    staging = new_staging(store, "import", with_work=False)
    root = os.path.join(staging, "img", "root")
    try:
        if source.kind == "tarball":
            say(quiet, f"importing {source.args[0]}")
            try:
                f = open(source.args[0], "rb")
            except OSError as e:
                raise PlashError(f"cannot open {source.args[0]}: {e.strerror}") from None
            with f:
                code = await run_child(launcher("unpack", root), stdin=f.fileno())
            if code:
                raise PlashError(f"cannot import {source.args[0]}")
        elif source.kind == "debootstrap":
            await debootstrap(source, root, quiet)
        else:
            raise PlashError(f"cannot import from {source.kind}")
        image = store.publish(os.path.join(staging, "img"), 0, None, key)
    except BaseException:
        await discard(staging)
        raise
    await discard(staging)
    return image


def debootstrap_command(suite: str, mirror: str) -> tuple[list[str], bool]:
    """The host command that writes a Debian root file system tarball to stdout (or into a dir)."""
    from plash.launch.userns import id_ranges

    if shutil.which("mmdebstrap"):
        if os.getuid() == 0:
            mode = "root"
        elif id_ranges() is not None:
            mode = "unshare"
        else:
            if not shutil.which("fakechroot"):
                raise PlashError("--from-debootstrap without a subuid range needs fakechroot and fakeroot",
                                 hint="apt-get install fakechroot fakeroot, or give this user a range in /etc/subuid")
            mode = "fakechroot"
        return ["mmdebstrap", "--quiet", "--variant=minbase", f"--mode={mode}", suite, "-", mirror], True
    if os.getuid() == 0 and shutil.which("debootstrap"):
        return ["debootstrap", "--variant=minbase", suite, "{dir}", mirror], False
    raise PlashError("--from-debootstrap needs mmdebstrap (or debootstrap, as root) on the host",
                     hint="apt-get install mmdebstrap")


async def debootstrap(source: Source, root: str, quiet: bool) -> None:
    suite = source.args[0]
    mirror = source.args[1] if len(source.args) > 1 else default_mirror()
    argv, streams = debootstrap_command(suite, mirror)
    say(quiet, f"creating a {suite} root file system with {argv[0]} (this takes a while)")
    if streams:
        r, w = os.pipe()
        async with trio.open_nursery() as nursery:
            codes: dict[str, int] = {}

            async def produce() -> None:
                try:
                    codes["make"] = await run_child(argv, stdout=w)
                finally:
                    os.close(w)

            async def consume() -> None:
                try:
                    codes["unpack"] = await run_child(launcher("unpack", root), stdin=r)
                finally:
                    os.close(r)

            nursery.start_soon(produce)
            nursery.start_soon(consume)
        if codes.get("make") or codes.get("unpack"):
            raise PlashError(f"{argv[0]} failed for suite {suite} (exit {codes.get('make') or codes.get('unpack')})")
    else:
        code = await run_child([a.replace("{dir}", root) for a in argv])
        if code:
            raise PlashError(f"debootstrap failed for suite {suite} (exit {code})")


async def build_layer(store: Store, parent: int, layer: Layer, n: int, total: int, quiet: bool) -> int:
    found = store.lookup_key(layer.key)
    if found is not None:
        return found
    if not layer.shell.strip():
        staging = new_staging(store, "layer", with_work=False)  # hints only: no container needed
    else:
        staging = new_staging(store, "layer")
        say(quiet, f"building layer {n}/{total} ({layer.where})")
        spec = {"store": store.path, "image": parent, "shell": layer.shell, "staging": staging}
        try:
            code = await run_child(launcher("step", json.dumps(spec)))
        except BaseException:
            await discard(staging)
            raise
        if code:
            await discard(staging)
            raise PlashError(f"build failed at {layer.where} (exit {code})")
        if await run_child(launcher("finish", staging)):
            await discard(staging)
            raise PlashError("cannot clean up the new layer")
    try:
        image = store.publish(os.path.join(staging, "img"), parent, layer.meta, layer.key)
    finally:
        await discard(staging)
    return image


def build_jobs(store: Store, prepared: Prepared, quiet: bool) -> dict[str, Job]:
    jobs: dict[str, Job] = {}
    base = prepared.base_key
    if prepared.base_id is None:
        jobs[base] = Job(base, (), "import", lambda: import_source(store, prepared.source, base, quiet),
                         label=f"import {prepared.source.kind}")
    else:
        base_id = prepared.base_id

        async def known() -> int:
            return base_id

        jobs[base] = Job(base, (), "none", known)
    parent = base
    total = len(prepared.layers)
    for n, layer in enumerate(prepared.layers, 1):
        def make(layer: Layer = layer, n: int = n):  # type: ignore[no-untyped-def]
            return lambda parent_id: build_layer(store, parent_id, layer, n, total, quiet)

        jobs[layer.key] = Job(layer.key, (parent,), "step", make(), label=f"layer {n}")
        parent = layer.key
    return jobs
