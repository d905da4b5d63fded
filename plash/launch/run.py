"""`plash run IMAGE [CMD...]`: straight from argv to exec, without click or trio."""

from __future__ import annotations

import os

from plash import config
from plash.errors import PlashError
from plash.launch.container import ContainerSpec, container_env, split_assignments, start
from plash.store.layout import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.store.staging import Staging


def image_spec(
    store: Store,
    image: int,
    argv: list[str],
    binds: tuple[str, ...] = config.RUN_BINDS,
    staging: Staging | None = None,
    cwd: str | None = None,
    build_step: bool = False,
    step_binds: tuple[tuple[str, str], ...] = (),
) -> ContainerSpec:
    """The ContainerSpec for running argv in an image of the store.

    A build step (build_step) gets no host variables beyond the fixed few
    (PLASH_EXPORT and the image's env names are for containers): its result
    is cached under a key that does not know them. Containers start from the
    image's /etc/profile, like its login shell.
    """
    chain = store.chain(image)
    meta = store.meta(image)
    assigned, argv = split_assignments(argv)
    if argv[:1] == [""]:
        raise PlashError("the command is an empty string")
    if not argv and meta.get("oci_cmd"):
        argv = list(meta["oci_cmd"])  # an OCI image's Entrypoint + Cmd is its default command
    if build_step:
        env = container_env([], [], list(meta.get("oci_env", [])), exports=False)
    else:
        env = container_env(
            list(meta.get("env", [])), list(meta.get("env_prefix", [])), list(meta.get("oci_env", []))
        )
    all_binds = [(b, b) for b in binds] + config.home_binds(binds)
    for m in meta.get("mount", []):
        src, _, dst = m.partition(":")
        all_binds.append((src, dst or src))
    all_binds += step_binds
    if cwd is None:
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = "/"
    return ContainerSpec(
        store=store.path,
        layer_dirs=tuple(str(i) for i in reversed(chain[1:])),
        argv=tuple(argv),
        cwd=cwd,
        env=tuple(env.items()),
        binds=tuple(all_binds),
        staging=staging,
        fallback_cwd=meta.get("oci_workdir", ["/"])[0],
        # Docker images bring their own environment (the config's Env), which a
        # distribution's /etc/profile would override (PATH): theirs is kept as is.
        profile=not build_step and "oci_env" not in meta,
        assigned=tuple(assigned.items()),
    )


def main(args: list[str]) -> None:
    """Run a command in an image; replaces this process (or raises PlashError)."""
    if not args:
        from plash.errors import UsageError

        raise UsageError("missing argument IMAGE", "plash run IMAGE [CMD...]")
    if args[0] == "--":
        args = args[1:]
        if not args:
            from plash.errors import UsageError

            raise UsageError("missing argument IMAGE", "plash run IMAGE [CMD...]")
    store = Store(config.data_dir())
    image = store.resolve(args[0])  # an id or a map name; a missing store has no images, and stays missing
    start(image_spec(store.private(), image, args[1:]))
