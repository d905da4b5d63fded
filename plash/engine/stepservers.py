"""The engine's side of the step servers (plash.launch.steps): build steps without a launcher start each.

A trio run has one server, a launcher child that stays in plash's user
namespace, and sends it every step, the ones that run at once included
(the "step" limit bounds them): each is a fork of the server, and a
server's start (a Python start, its imports, the id maps) is paid once,
not once per step that runs beside others. A server that failed or did
not answer is killed and never used again; the next step starts another.
The server is closed when the run ends (scheduler.run): it sees its
socket closed and exits.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys

import trio

from plash.engine import launcher
from plash.engine.children import read_lines
from plash.errors import PlashError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

KILL_GRACE = 5.0  # seconds a server has to confirm it killed a cancelled step, or to end once told to


class StepServer:
    """One server: its process and the engine's end of its socket."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc, self.sock = proc, trio.socket.from_stdlib_socket(sock)
        self.broken = False
        self.sending = trio.Lock()  # steps run side by side: one send at a time
        self.reading = trio.Lock()
        self.last_words: bytes | None = None

    @classmethod
    def start(cls) -> StepServer:
        """A new server, or the one the build started before trio loaded (plash.engine.launcher)."""
        return cls(*(launcher.early.pop() if launcher.early else launcher.spawn_server()))

    async def wait(self) -> None:
        """Until the server's process has ended (reaped)."""
        pidfd = os.pidfd_open(self.proc.pid)
        try:
            await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        self.proc.wait()

    async def run(self, spec_file: str, out: int) -> int:
        """Run the step of spec_file, its output going to the descriptor out; return its exit status."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        chan = trio.socket.from_stdlib_socket(mine)
        sent = False
        try:
            try:
                async with self.sending:
                    await self.sock.sendmsg([b"step " + os.fsencode(spec_file)], [
                        (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [out, theirs.fileno()]))])
                sent = True
            except OSError:
                pass  # the server is gone (it could not start): its last words are still to be read
            finally:
                theirs.close()  # the server has its own copy now, or never will
            reply = b""
            if sent:
                with contextlib.suppress(OSError):
                    reply = await chan.recv(1 << 16)
        except BaseException:
            if sent:  # cancelled while the step runs (cancelled before: the server was told nothing)
                with trio.CancelScope(shield=True):
                    await self._stop_step(chan)
            raise
        finally:
            chan.close()
        if reply.startswith(b"exit "):
            return int(reply[5:])
        await self._failed()

    async def _failed(self) -> NoReturn:
        """The step's socket closed without an exit status: the server failed; say why if it did."""
        async with self.reading:  # the steps that ran beside it see the same
            if self.last_words is None:
                self.last_words = b""
                with trio.move_on_after(KILL_GRACE), contextlib.suppress(OSError):
                    self.last_words = await self.sock.recv(1 << 16)
        self.kill()
        if self.last_words.startswith(b"error "):
            data = json.loads(self.last_words[6:])
            raise PlashError(data["message"], hint=data.get("hint"))
        raise PlashError("the step launcher ended before the step did")

    async def _stop_step(self, chan: trio.socket.SocketType) -> None:
        """The step was cancelled: have it killed, or kill the server (its steps die with it)."""
        reply = b""
        with trio.move_on_after(KILL_GRACE), contextlib.suppress(OSError):
            await chan.send(b"kill")
            reply = await chan.recv(1 << 16)
        if not reply.startswith(b"exit "):
            self.kill()

    def kill(self) -> None:
        self.broken = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class Pool:
    """The server of one trio run, and those that failed before it (to be reaped)."""

    def __init__(self) -> None:
        self.every: list[StepServer] = []

    def server(self) -> StepServer:
        if not self.every or self.every[-1].broken:
            self.every.append(StepServer.start())
        return self.every[-1]

    async def aclose(self) -> None:
        """Close every socket and wait for the servers to exit (shielded: also when cancelled)."""
        with trio.CancelScope(shield=True):
            for server in self.every:
                server.sock.close()
            for server in self.every:
                with trio.move_on_after(KILL_GRACE) as waited:
                    await server.wait()
                if waited.cancelled_caught:  # stuck (a step in uninterruptible sleep?): killed, its steps with it
                    server.kill()
                    await server.wait()
        self.every.clear()
        launcher.drop_early()  # started for this run, and not needed after all


_pool: trio.lowlevel.RunVar[Pool] = trio.lowlevel.RunVar("plash_step_servers")


def pool() -> Pool:
    try:
        return _pool.get()
    except LookupError:
        made = Pool()
        _pool.set(made)
        return made


async def close_pool() -> None:
    """End this run's servers, if it started any."""
    try:
        made = _pool.get()
    except LookupError:
        return
    await made.aclose()


async def run_step(spec_file: str, on_line: Callable[[str], None] | None = None) -> int:
    """Run a build step (a StepSpec file) in a server; its output goes to on_line, else to stderr."""
    server = pool().server()
    if on_line is None:
        return await server.run(spec_file, sys.stderr.fileno())
    r, w = os.pipe()
    try:
        reader = trio.lowlevel.FdStream(r)
    except BaseException:
        os.close(r)
        os.close(w)
        raise
    code = -1
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_lines, reader, on_line)
            try:
                code = await server.run(spec_file, w)
            finally:
                os.close(w)  # the step holds its own copies: EOF comes when the last of them is closed
    finally:
        await reader.aclose()
    return code
