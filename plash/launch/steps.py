"""The step server: one launcher process that stays in plash's user namespace and runs build steps.

    python -m plash.launch --parent PID serve FD

A cold layer used to cost a whole launcher (a Python start, its imports,
the id maps: newuidmap and newgidmap for a user with subordinate ids) for
a step of a few milliseconds. The engine now starts a server once and
sends it the steps, one at a time, on FD, a SOCK_SEQPACKET socket (one
message each way per request):

    engine -> server   b"step " + path of a StepSpec file, with the descriptor the
                       step's output goes to (SCM_RIGHTS)
    server -> engine   b"exit N" when it has ended (N: its exit status, 128+S for signal S)
                       b"error " + JSON {"message", "hint"} when the server cannot work at all
    engine -> server   b"kill": kill the running step's whole session (cancelled)

Each step is a forked child: its own session, its own mount namespace
(made inside the server's user namespace), then plash.launch.container's
start(), which mounts, chroots and execs the step's shell. The server ends
when the socket is closed or the engine is gone; it kills a running step
first, and the step's supervisor (container.supervise) kills its session
when the server is gone, so a SIGKILLed plash leaves no step running on.
"""

from __future__ import annotations

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
    child = child_fd = -1
    while True:
        ready = {f for f, _ in poller.poll()}
        if watch in ready:
            break
        if child_fd in ready:
            _, status = os.waitpid(child, 0)
            poller.unregister(child_fd)
            os.close(child_fd)
            child = child_fd = -1
            if not _say(sock, b"exit %d" % _status(status)):
                break  # the engine is gone
        if sock.fileno() not in ready:
            continue
        msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 1)
        if not msg:
            break  # the engine closed the socket: done
        if msg == b"kill":
            if child > 0:
                _kill(child)
            continue
        if not msg.startswith(b"step ") or len(fds) != 1 or child > 0:
            for f in fds:
                os.close(f)
            if not _say(sock, b"exit 1"):
                break
            continue
        path = os.fsdecode(msg[5:])
        pid = os.fork()
        if pid == 0:
            sock.close()
            if watch >= 0:
                os.close(watch)
            _step_child(path, fds[0], me)
        os.close(fds[0])
        child, child_fd = pid, os.pidfd_open(pid)
        poller.register(child_fd, select.POLLIN)
    if child > 0:
        _kill(child)
        os.waitpid(child, 0)


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
