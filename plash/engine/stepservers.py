"""The engine's side of the step servers (plash.launch.steps): build steps without a launcher start each.

A trio run keeps a pool of servers, one per step running at a time (the
"step" limit bounds them), each a launcher child that stays in plash's
user namespace. A step borrows an idle server or starts one; a server
that failed or did not answer is killed and never lent again. The pool is
closed when the run ends (scheduler.run): the servers see their socket
closed and exit.
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
    from collections.abc import AsyncIterator, Callable

KILL_GRACE = 5.0  # seconds a server has to confirm it killed a cancelled step, or to end once told to


class StepServer:
    """One server: its process and the engine's end of its socket."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc, self.sock = proc, trio.socket.from_stdlib_socket(sock)
        self.broken = False

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
        sent = False
        try:
            with contextlib.suppress(OSError):  # the server is gone (it could not start): its last words are still to be read
                await self.sock.sendmsg([b"step " + os.fsencode(spec_file)],
                                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [out]))])
            sent = True
            try:
                reply = await self.sock.recv(1 << 16)
            except OSError:
                reply = b""
        except BaseException:
            if sent:  # cancelled while the step runs (cancelled before: the server was told nothing)
                with trio.CancelScope(shield=True):
                    await self._stop_step()
            raise
        return self._exit_status(reply)

    def _exit_status(self, reply: bytes) -> int:
        if reply.startswith(b"exit "):
            return int(reply[5:])
        self.kill()
        if reply.startswith(b"error "):
            data = json.loads(reply[6:])
            raise PlashError(data["message"], hint=data.get("hint"))
        raise PlashError("the step launcher ended before the step did")

    async def _stop_step(self) -> None:
        """The step was cancelled: have it killed, or kill the server (its steps die with it)."""
        reply = b""
        with trio.move_on_after(KILL_GRACE), contextlib.suppress(OSError):
            await self.sock.send(b"kill")
            reply = await self.sock.recv(1 << 16)
        if not reply.startswith(b"exit "):
            self.kill()

    def kill(self) -> None:
        self.broken = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class Pool:
    """The servers of one trio run."""

    def __init__(self) -> None:
        self.idle: list[StepServer] = []
        self.every: list[StepServer] = []

    @contextlib.asynccontextmanager
    async def server(self) -> AsyncIterator[StepServer]:
        server = self.idle.pop() if self.idle else None
        if server is None:
            server = StepServer.start()
            self.every.append(server)
        try:
            yield server
        finally:
            if not server.broken:
                self.idle.append(server)

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
        self.idle.clear()
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
    async with pool().server() as server:
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
