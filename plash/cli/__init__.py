"""The command line's click side: help rendering, and every command that is not fast.

plash.__main__ declares every command and runs the fast ones (run, build, b,
eval, help-macros) itself; here is what needs click:

    app      the click group, which loads each command from its module when asked; click's errors as plash's
    helps    plash help and plash version; the click commands that render the fast commands' help
    store    commands on the store and its images: init, export-tar, copy, mount, nodepath, map, rm, fsck, sudo...
    images   commands that make images: warm, create, import-tar, import-lxc, import-url, import-docker
    listing  commands that show what the store holds: images (ls), inspect, history, df
    push     push an image to a registry, an OCI layout or a docker archive
    registry login and logout
    completion  shell completion scripts (and the helper they call) and the man page

stdout carries only results (ids, paths, values); everything else goes to stderr.
"""

from __future__ import annotations

import sys

# for commands whose arguments after IMAGE are another command's (plash run IMAGE ls -l)
IMAGE_CMD = {"ignore_unknown_options": True, "allow_interspersed_args": False}


def out(value: object) -> None:
    sys.stdout.write(f"{value}\n")
    sys.stdout.flush()
