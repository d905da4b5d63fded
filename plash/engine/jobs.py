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

from plash import testhook
from plash.engine.build import Prepared, default_mirror
from plash.engine.events import Event
from plash.engine.fetch import http, lxc
from plash.engine.plan import Layer, Source
from plash.engine.scheduler import Job
from plash.errors import NoImage, PlashError
from plash.store.layout import Store, full_store_note
from plash.store.staging import new_staging

LIMITS = {"import": 4, "step": 2}

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Awaitable, Callable

    import httpx

    Emit = Callable[[Event], None]


def note(text: str) -> Event:
    return Event("note", text)


async def fetch_unpack(c: object, url: str, sha: str | None, size: int | None, root: str, emit: Emit,
                       resolve: Callable[[], Awaitable[tuple[str, str | None, int | None]]] | None = None) -> str:
    """Download a tarball and unpack it into root while it streams; verify before returning.

    The unpacker runs in the user namespace, fed through a pipe, so download,
    hashing and unpacking overlap. A digest or size mismatch raises, and the
    caller discards root's staging dir: nothing unverified is ever published.
    With resolve, the URL, digest and size come from it (a catalogue lookup),
    while the unpacker process is already starting.
    """
    r, w = os.pipe()
    label = [url]
    ended: list[bool] = []
    async with trio.open_nursery() as nursery:
        async def unpacker() -> None:
            try:
                await unpack_child(root, r, lambda: label[0])
            finally:
                os.close(r)

        nursery.start_soon(unpacker)
        out = trio.lowlevel.FdStream(w)
        try:
            if resolve is not None:
                url, sha, size = await resolve()  # an error here cancels the unpacker
                label[0] = url
            verify = http.Verified(url, sha, size)
            emit(Event("download-start", url, 0, size))

            async def sink(chunk: bytes) -> None:
                await send_or_drop(out, chunk, ended)

            def progress(done: int, total: int | None) -> None:
                emit(Event("download-progress", url, done, total))

            digest = await http.stream(c, url, sink, verify, progress)  # type: ignore[arg-type]
        finally:
            await out.aclose()
    emit(Event("download-done", url, verify.count, verify.count))
    return digest


async def send_or_drop(out: trio.lowlevel.FdStream, chunk: bytes, ended: list[bool]) -> None:
    """Feed the unpacker; once it has stopped reading (at the end of the archive, or failed), drop the rest.

    The download goes on to its end all the same, so that its digest is
    checked in full; the unpacker's exit status says whether it was content.
    """
    if ended:
        return
    try:
        await out.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        ended.append(True)


def final_key(prepared: Prepared) -> str:
    return prepared.layers[-1].key if prepared.layers else prepared.base_key


def launcher(*args: str) -> list[str]:
    """A launcher child's command line; it dies with this process (see plash.launch)."""
    return [sys.executable, "-m", "plash.launch", "--parent", str(os.getpid()), *args]


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


async def run_streaming(argv: list[str], on_line: Callable[[str], None]) -> int:
    """Run a child in its own session with stdout and stderr read line by line."""
    r, w = os.pipe()
    try:
        proc = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL, stdout=w, stderr=w,
                                                start_new_session=True)
    finally:
        os.close(w)
    reader = trio.lowlevel.FdStream(r)
    try:
        pending = b""
        while chunk := await reader.receive_some(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                on_line(line.decode(errors="replace"))
        if pending:
            on_line(pending.decode(errors="replace"))
        return await proc.wait()
    except BaseException:
        with trio.CancelScope(shield=True):
            await _kill_group(proc)
            await proc.wait()
        raise
    finally:
        await reader.aclose()


async def unpack_child(root: str, stdin: int, what: str | Callable[[], str], oci: bool = False) -> None:
    """Unpack a tarball from stdin into root in a launcher child; its error, if any, names `what`."""
    proc = await trio.run_process(
        launcher("unpack-oci" if oci else "unpack", root), stdin=stdin, capture_stdout=True, capture_stderr=True, check=False,
        start_new_session=True, deliver_cancel=_kill_group,
    )
    if proc.returncode:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        why = lines[0].removeprefix("plash error: ") if lines else f"exit {proc.returncode}"
        raise PlashError(f"{what if isinstance(what, str) else what()}: {why}")


async def discard(path: str, published: bool = False) -> None:
    """Delete a staging dir even while being cancelled (shielded).

    Once its image is published, what is left is a few empty dirs and small
    files of ours: removed here, without a launcher process, when possible.
    """
    if published:
        try:
            for name in os.listdir(path):
                p = os.path.join(path, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    os.rmdir(p)
                else:
                    os.unlink(p)
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            pass
    with trio.CancelScope(shield=True):
        await run_child(launcher("rmtree", path))


async def import_source(store: Store, source: Source, key: str, emit: Emit, reuse: bool = True,
                        insecure: bool = False) -> int:
    """Import a base image and record it under its key; reuse a recorded one unless told not to."""
    before = store.lookup_key(key)
    if reuse and before is not None:
        return before
    async with KeyLock(store, key, emit, f"the {source.kind} image {' '.join(source.args)}"):
        # look again: another process may have made it meanwhile; a fresh import
        # (reuse=False) still takes one that was finished after it started
        found = store.lookup_key(key)
        if found is not None and (reuse or found != before):
            return found
        return await _import_source(store, source, key, emit, insecure)


async def _import_source(store: Store, source: Source, key: str, emit: Emit, insecure: bool) -> int:
    if source.kind == "docker":
        from plash.engine.docker import import_registry

        emit(note(f"importing {source.args[0]}"))
        image = await import_registry(store, source.args[0], emit)
        store.record_key(key, image)
        return image
    staging = new_staging(store, "import", with_work=False)
    root = os.path.join(staging, "img", "root")
    try:
        if source.kind == "tarball":
            emit(note(f"importing {source.args[0]}"))
            try:
                f = open(source.args[0], "rb")
            except OSError as e:
                raise PlashError(f"cannot open {source.args[0]}: {e.strerror}") from None
            with f:
                await unpack_child(root, f.fileno(), source.args[0])
        elif source.kind == "debootstrap":
            await debootstrap(source, root, emit)
        elif source.kind == "lxc":
            async with http.client() as c:
                digest = source.args[1] if len(source.args) > 1 else None
                async def find(c: httpx.AsyncClient = c) -> tuple[str, str | None, int | None]:
                    rootfs = await lxc.resolve(c, source.args[0], insecure=insecure, digest=digest)
                    return rootfs.url, rootfs.sha256, rootfs.size

                await fetch_unpack(c, source.args[0], None, None, root, emit, resolve=find)
        elif source.kind == "url":
            async with http.client() as c:
                await fetch_unpack(c, source.args[0], source.args[1] if len(source.args) > 1 else None, None, root, emit)
        else:
            raise PlashError(f"cannot import from {source.kind}")
        image = store.publish(os.path.join(staging, "img"), 0, None, key)
    except BaseException:
        await discard(staging)
        raise
    await discard(staging, published=True)
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


async def check_suite(suite: str, mirror: str) -> None:
    """Fail early, and say so, when the mirror has no such suite (mmdebstrap's own error is obscure)."""
    if not mirror.startswith(("http://", "https://")):
        return  # file:, copy: or mirror lists: mmdebstrap knows best
    url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    async with http.client() as c:
        try:
            await http.get_bytes(c, url)
        except http.FetchError as e:
            if e.status == 404:
                raise PlashError(f"--from-debootstrap: unknown suite {suite!r}: {mirror} has no dists/{suite}/Release",
                                 hint="use a suite or codename the mirror has, e.g. bookworm, trixie, stable") from None
            raise PlashError(f"--from-debootstrap: cannot reach the mirror: {e.message}") from None


async def debootstrap(source: Source, root: str, emit: Emit) -> None:
    suite = source.args[0]
    mirror = source.args[1] if len(source.args) > 1 else default_mirror()
    argv, streams = debootstrap_command(suite, mirror)
    await check_suite(suite, mirror)
    emit(note(f"creating a {suite} root file system with {argv[0]} (this takes a while)"))
    if streams:
        r, w = os.pipe()
        codes: dict[str, int] = {}
        unpack_error: list[PlashError] = []
        async with trio.open_nursery() as nursery:

            async def produce() -> None:
                try:
                    codes["make"] = await run_child(argv, stdout=w)
                finally:
                    os.close(w)

            async def consume() -> None:
                try:
                    await unpack_child(root, r, f"{argv[0]} output")
                except PlashError as e:
                    unpack_error.append(e)  # reported below, unless the maker failed first
                finally:
                    os.close(r)

            nursery.start_soon(produce)
            nursery.start_soon(consume)
        if codes.get("make"):
            raise PlashError(f"{argv[0]} failed for suite {suite} (exit {codes['make']}; its messages are above)")
        if unpack_error:
            raise unpack_error[0]
    else:
        code = await run_child([a.replace("{dir}", root) for a in argv])
        if code:
            raise PlashError(f"debootstrap failed for suite {suite} (exit {code})")


class KeyLock:
    """An exclusive lock per cache key across processes (flock), polled so that trio can cancel it.

    Whoever holds it makes the layer or import; the others wait, then look
    the key up again and reuse what was made.
    """

    def __init__(self, store: Store, key: str, emit: Emit, what: str) -> None:
        self.path = os.path.join(store.locks, key)
        self.emit, self.what = emit, what
        self.fd = -1

    async def __aenter__(self) -> None:
        import fcntl

        told = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if not told:
                    self.emit(note(f"waiting for another plash process making {self.what}"))
                    told = True
                await trio.sleep(0.05)
                continue
            try:  # the holder before us unlinks the file when done: is ours still the one in place?
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)

    async def __aexit__(self, *exc: object) -> None:
        # unlink before unlocking, so the lock file does not outlive its use
        try:
            os.unlink(self.path)
        finally:
            os.close(self.fd)


class Holds:
    """The in-use marks (Store.hold) a build keeps on every image it made or uses, until it ends.

    So `rm` and `shrink` cannot take a finished layer from under the next
    step, nor the base image before its first step starts.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.fds: list[int] = []

    def image(self, image: int) -> bool:
        """Hold an existing image; False if it is gone (or went while locking)."""
        try:
            self.fds.append(self.store.hold(image))
        except NoImage:
            return False
        return True

    def staged(self, staged: str) -> None:
        self.fds.append(self.store.hold_staged(staged))

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


async def build_layer(store: Store, parent: int, layer: Layer, n: int, total: int, emit: Emit, cwd: str = "/",
                      holds: Holds | None = None) -> int:
    holds = holds or Holds(store)
    found = store.lookup_key(layer.key)
    if found is not None and holds.image(found):
        return found
    async with KeyLock(store, layer.key, emit, f"layer {n}/{total} ({layer.where})"):
        found = store.lookup_key(layer.key)  # look again: another process may have made it meanwhile
        if found is not None and holds.image(found):
            return found
        image = await _build_layer(store, parent, layer, n, total, emit, cwd, holds)
    testhook.pause("layer-made", str(image))
    return image


async def _build_layer(store: Store, parent: int, layer: Layer, n: int, total: int, emit: Emit, cwd: str,
                       holds: Holds) -> int:
    if not layer.shell.strip():
        staging = new_staging(store, "layer", with_work=False)  # hints only: no container needed
    else:
        staging = new_staging(store, "layer")
        emit(note(f"building layer {n}/{total} ({layer.where})"))
        spec = {"store": store.path, "image": parent, "shell": layer.shell, "staging": staging, "cwd": cwd}
        try:
            spec_file = os.path.join(staging, "step.json")
            with open(spec_file, "w", encoding="utf-8", errors="surrogateescape") as f:
                json.dump(spec, f)
            argv = launcher("step", spec_file)
            if getattr(emit, "wants_output", False):  # a live display: lines go through it
                label = f"layer {n}/{total}"
                code = await run_streaming(argv, lambda line: emit(Event("step-output", label, text=line)))
                emit(Event("step-done", label))
            else:
                code = await run_child(argv)
        except BaseException:
            await discard(staging)
            raise
        if code:
            full = full_store_note(store.path)  # before discarding frees the room
            await discard(staging)
            raise PlashError(f"build failed at {layer.where} (exit {code}){full}")
        # the step's launcher finishes the staging dir itself; if it could not, do it here
        if os.path.exists(os.path.join(staging, "work")) and await run_child(launcher("finish", staging)):
            await discard(staging)
            raise PlashError("cannot clean up the new layer")
    try:
        holds.staged(os.path.join(staging, "img"))
        image = store.publish(os.path.join(staging, "img"), parent, layer.meta, layer.key)
    finally:
        await discard(staging, published=True)
    return image


def build_jobs(store: Store, prepared: Prepared, emit: Emit, holds: Holds) -> dict[str, Job]:
    """The DAG of one build; every image it makes or uses is held in holds (the caller closes it)."""
    jobs: dict[str, Job] = {}
    base = prepared.base_key
    if prepared.base_id is None:
        async def imported() -> int:
            image = await import_source(store, prepared.source, base, emit)
            if not holds.image(image):
                raise NoImage(f"the imported base image {image} was removed meanwhile")
            return image

        jobs[base] = Job(base, (), "import", imported, label=f"import {prepared.source.kind}")
    else:
        base_id = prepared.base_id

        async def known() -> int:
            if not holds.image(base_id):
                raise NoImage(f"no image: {base_id}")
            return base_id

        jobs[base] = Job(base, (), "none", known)
    parent = base
    total = len(prepared.layers)
    for n, layer in enumerate(prepared.layers, 1):
        def make(layer: Layer = layer, n: int = n):  # type: ignore[no-untyped-def]
            return lambda parent_id: build_layer(store, parent_id, layer, n, total, emit, prepared.cwd, holds)

        jobs[layer.key] = Job(layer.key, (parent,), "step", make(), label=f"layer {n}")
        parent = layer.key
    return jobs
