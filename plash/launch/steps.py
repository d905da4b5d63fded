"""The step server: one launcher process that stays in plash's user namespace and runs build steps.

    python -m plash.launch --parent PID serve FD

A cold layer used to cost a whole launcher (a Python start, its imports,
the id maps: newuidmap and newgidmap for a user with subordinate ids) for
a step of a few milliseconds. The engine now starts a server once per
build and sends it every step, the ones that run at once (warm) included.
On FD, a SOCK_SEQPACKET socket, the engine sends a step with the
descriptors it needs (SCM_RIGHTS); the rest goes over the step's own
socket, one end of a socketpair the engine made for it:

    engine -> server   b"step " + path of a StepSpec file, with two descriptors: where
                       the step's output goes, and the server's end of the step's socket
    server -> engine   b"error " + JSON {"message", "hint"} on FD, when the server cannot
                       work at all (it cannot enter the namespaces), before it ends
    on the step's socket:
    server -> engine   b"exit N" when the step has ended (N: its exit status, 128+S for signal S)
    engine -> server   b"kill": kill the step's whole session (cancelled); the engine
                       closing its end does the same

Each step is a forked child: its own session, its own mount namespace
(made inside the server's user namespace), then plash.launch.container's
start(), which mounts, chroots and execs the step's shell. The server ends
when the socket is closed or the engine is gone; it kills its running
steps first, and the step's supervisor (container.supervise) kills its session
when the server is gone, so a SIGKILLed plash leaves no step running on.
"""

from __future__ import annotations

import array
import os
import select
import signal
import socket
import sys

from plash import config
from plash.errors import PlashError, os_message, report
from plash.launch import userns
from plash.launch.stepspec import StepSpec

SHELL_IN_ARGV = 64 * 1024


def step(spec: StepSpec, supervisor_of: int) -> None:
    """In a forked child of the server: run the step's shell in a container. Does not return.

    supervisor_of: the pid whose end ends the step (the server).
    """
    from plash.launch.container import start
    from plash.launch.run import image_spec
    from plash.store.layout import Store
    from plash.store.staging import Staging

    store = Store(spec.store)
    shell = spec.shell
    if len(shell.encode("utf-8", "surrogateescape")) < SHELL_IN_ARGV:
        argv = ["/bin/sh", "-e", "-x", "-c", shell]
    else:
        # Too long for one argument (the kernel's limit is 128 KiB): the shell
        # reads it from a memfd, which leads nowhere outside the container.
        script = os.memfd_create("plash-step", 0)
        os.write(script, shell.encode("utf-8", "surrogateescape"))
        argv = ["/bin/sh", "-e", "-x", f"/proc/self/fd/{script}"]
    # The step runs where the user is (or the executable's directory) when
    # that exists inside the image, as the original did: home is shared.
    cspec = image_spec(store, spec.image, argv, binds=config.BUILD_BINDS, staging=Staging(store, spec.staging),
                       cwd=spec.cwd, build_step=True, step_binds=spec.binds)
    env = dict(cspec.env)
    if userns.single_mapping():
        # Only uid 0 exists in the namespace: apt's drop to _apt would fail.
        # APT_CONFIG is read before apt's own files and needs no file in the image.
        fd = os.memfd_create("plash-apt.conf", 0)
        os.write(fd, b'APT::Sandbox::User "root";\n')
        os.lseek(fd, 0, 0)
        env["APT_CONFIG"] = f"/proc/self/fd/{fd}"
    cspec.env = tuple(env.items())
    cspec.supervise = supervisor_of
    start(cspec)


def _step_child(path: str, out: int, server: int) -> None:
    """The forked child for one step: a session of its own, output to out, then step(). Never returns."""
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)  # build output is not a result: the engine shows it on stderr
        os.dup2(out, 2)
        for fd in (null, out):
            os.close(fd)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        step(StepSpec.read(path), server)
    except PlashError as e:
        report(e)
        code = e.exit_code
    except OSError as e:
        sys.stderr.write(f"plash error: {os_message(e)}\n")
    except BaseException as e:  # never back into the server's loop
        sys.stderr.write(f"plash error: {e!r}\n")
    finally:
        sys.stderr.flush()
        os._exit(code)


def _preload() -> None:
    """Import once, here, what every step imports: a forked child's imports die with it."""
    import json  # noqa: F401  (StepSpec.read)

    from plash.launch import container, run  # noqa: F401
    from plash.store import staging  # noqa: F401


def _say(sock: socket.socket, msg: bytes) -> bool:
    """Send the engine one message; False if it is gone."""
    try:
        sock.send(msg)
    except OSError:
        return False
    return True


def _status(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


class _Running:
    """A step the server runs: its child, a pidfd of it, and the step's own socket to the engine."""

    __slots__ = ("chan", "pid", "pidfd")

    def __init__(self, chan: socket.socket, pid: int) -> None:
        self.chan, self.pid, self.pidfd = chan, pid, os.pidfd_open(pid)


def _receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    """A message of the engine and the descriptors it brings, closed on exec (recv_fds leaves them inheritable)."""
    fds = array.array("i")
    msg, ancdata, _, _ = sock.recvmsg(1 << 16, socket.CMSG_LEN(4 * fds.itemsize), socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return msg, list(fds)


def serve(fd: int, engine: int) -> None:
    """Run steps as the engine sends them on fd, until it closes fd or ends (see the module's doc)."""
    sock = socket.socket(fileno=fd)
    watch = os.pidfd_open(engine) if engine else -1
    if engine and os.getppid() != engine:
        return  # the engine is gone already
    try:
        userns.enter(mount_ns=False)  # once: every step's mount namespace is made inside it
    except PlashError as e:
        import json

        _say(sock, b"error " + json.dumps({"message": e.message, "hint": e.hint}).encode())
        return
    _preload()
    sys.stdout.flush()
    sys.stderr.flush()
    me = os.getpid()
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    if watch >= 0:
        poller.register(watch, select.POLLIN)
    by_pidfd: dict[int, _Running] = {}
    by_chan: dict[int, _Running] = {}
    while True:
        ready = {f for f, _ in poller.poll()}
        # ended steps first, new ones last: a descriptor closed here may be reused by a new step's
        for pidfd in ready & by_pidfd.keys():
            step = by_pidfd.pop(pidfd)
            _, status = os.waitpid(step.pid, 0)
            poller.unregister(pidfd)
            os.close(pidfd)
            if by_chan.pop(step.chan.fileno(), None):
                poller.unregister(step.chan)
            _say(step.chan, b"exit %d" % _status(status))
            step.chan.close()
        for chan in ready & by_chan.keys():
            step = by_chan[chan]
            try:
                msg = step.chan.recv(1 << 16)
            except OSError:
                msg = b""
            if not msg:  # the engine let go of the step: nobody waits for it
                poller.unregister(chan)
                del by_chan[chan]
            if msg in (b"kill", b""):
                _kill(step.pid)
        if watch in ready:
            break  # the engine is gone
        if sock.fileno() not in ready:
            continue
        msg, fds = _receive(sock)
        if not msg:
            break  # the engine closed the socket: done
        if not msg.startswith(b"step ") or len(fds) != 2:
            _refuse(fds)
            continue
        step = _start(os.fsdecode(msg[5:]), fds[0], socket.socket(fileno=fds[1]), me,
                      [sock.fileno(), watch, *by_pidfd, *(r.chan.fileno() for r in by_pidfd.values())])
        by_pidfd[step.pidfd], by_chan[step.chan.fileno()] = step, step
        poller.register(step.pidfd, select.POLLIN)
        poller.register(step.chan, select.POLLIN)
    for step in by_pidfd.values():
        _kill(step.pid)
    for step in by_pidfd.values():
        os.waitpid(step.pid, 0)


def _refuse(fds: list[int]) -> None:
    """A message that is no step: answered on the step socket it brings, if any."""
    for i, f in enumerate(fds):
        if i == 1:
            with socket.socket(fileno=f) as chan:
                _say(chan, b"exit 1")
        else:
            os.close(f)


def _start(path: str, out: int, chan: socket.socket, server: int, others: list[int]) -> _Running:
    """Fork the child of a step; the server keeps neither its output nor the others' descriptors in it."""
    pid = os.fork()
    if pid == 0:
        chan.close()
        for f in others:
            if f >= 0:
                os.close(f)
        _step_child(path, out, server)
    os.close(out)
    return _Running(chan, pid)


def _kill(child: int) -> None:
    """Kill a step's whole session (its pid is its session's): the supervisor's group and the command's.

    Before the child's setsid(), the child alone.
    """
    try:
        os.killpg(child, signal.SIGKILL)
    except ProcessLookupError:
        os.kill(child, signal.SIGKILL)  # a zombie until reaped: never ESRCH
    for name in os.listdir("/proc"):
        fields = proc_stat(name) if name.isdigit() else None
        if fields and fields[3] == str(child).encode():  # state ppid pgrp session
            try:
                os.kill(int(name), signal.SIGKILL)
            except OSError:
                continue  # gone meanwhile


def proc_stat(pid: str) -> list[bytes] | None:
    """The fields of /proc/PID/stat after "pid (comm) " (the comm may hold spaces); None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()
