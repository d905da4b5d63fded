"""Launcher entry for the engine, which cannot fork (trio runs): python -m plash.launch OP ARGS.

    step FILE       run a build step in a container, changes kept in staging;
                    FILE holds a plash.launch.stepspec.StepSpec
    finish STAGING  remove launcher residue and the work dir of a staging dir
    rmtree PATH     delete a tree that may hold files of subordinate ids
    unpack DIR      unpack a tarball from stdin into DIR, in the user namespace
    unpack-oci DIR  the same for an OCI layer (whiteouts become overlayfs whiteouts)
    pack DIR CLAMP  write the layer DIR to stdout as an OCI layer tarball, in the user namespace

With `--errors FD` (after --parent), a failure is written to FD as JSON
{"message", "hint"} instead of to stderr: the engine reads it as data.

With `--parent PID` first (the plash engine), a step's launcher stays as the
parent of its shell and kills the step's whole process group when that
process is gone, so that a plash killed with SIGKILL leaves no step running
on. (Not PR_SET_PDEATHSIG: it fires when the *thread* that forked exits,
and trio forks from worker threads.)
"""

from __future__ import annotations

import os
import sys

from plash import config
from plash.errors import PlashError, os_message, report
from plash.launch.stepspec import StepSpec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def _with_namespace_fallback(work: Callable[[], None]) -> None:
    try:
        work()
    except PermissionError:
        from plash.launch import userns

        if userns.privileged():
            raise

        userns.enter(mount_ns=False)
        work()


SHELL_IN_ARGV = 64 * 1024


def step(spec: StepSpec, parent: int = 0) -> None:
    from plash.launch import userns
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
    cspec.supervise = parent
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)  # build output is not a result: it goes to stderr
    start(cspec)


def die_with(engine: int) -> None:
    """End this process when the engine does (a thread with a pidfd: the engine forks from threads,
    so PR_SET_PDEATHSIG would fire when that thread ends, not the process)."""
    import select
    import threading

    watch = os.pidfd_open(engine)
    if os.getppid() != engine:
        os._exit(1)

    def wait() -> None:
        select.select([watch], [], [])
        os._exit(1)

    threading.Thread(target=wait, daemon=True).start()


def main(argv: list[str]) -> int:
    errors = -1
    try:
        parent = 0
        if argv[:1] == ["--parent"]:
            parent, argv = int(argv[1]), argv[2:]
        if argv[:1] == ["--errors"]:  # a pipe: a failure goes there as JSON (message, hint)
            errors, argv = int(argv[1]), argv[2:]
        op, *args = argv
        if op == "step":
            step(StepSpec.read(args[0]), parent)
        elif op == "finish":
            from plash.store.staging import Staging

            _with_namespace_fallback(Staging.at(args[0]).finish)
        elif op in ("unpack", "unpack-oci"):
            from plash.launch import userns
            from plash.store.unpack import unpack

            userns.enter(mount_ns=False)  # inside, ownership from the tarball can be kept
            if parent:
                die_with(parent)
            unpack(sys.stdin.buffer, args[0], oci=op == "unpack-oci")
        elif op == "pack":
            from plash.launch import userns
            from plash.store.packing import pack

            userns.enter(mount_ns=False)  # inside, owners read as the container sees them
            if parent:
                die_with(parent)
            pack(args[0], sys.stdout.fileno(), int(args[1]))
        elif op == "rmtree":
            from plash.store.rmtree import rmtree

            _with_namespace_fallback(lambda: rmtree(args[0]))
        else:
            sys.stderr.write(f"plash.launch: unknown operation {op}\n")
            return 2
    except PlashError as e:
        if errors < 0 or not _report_to(errors, e.message, e.hint):
            report(e)
        return e.exit_code
    except OSError as e:
        if errors < 0 or not _report_to(errors, os_message(e), None):
            sys.stderr.write(f"plash error: {os_message(e)}\n")
        return 1
    return 0


def _report_to(fd: int, message: str, hint: str | None) -> bool:
    """Send a failure to the engine as data; False if the pipe is gone."""
    import json

    try:
        os.write(fd, json.dumps({"message": message, "hint": hint}).encode())
    except OSError:
        return False
    return True


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # not sys.exit: an unpacker's reader thread may still be blocked on stdin
