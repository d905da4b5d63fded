"""Package caches across builds: a second cold build of an --apt layer against the first, with and without caches.

    python bench/package_cache.py [-n 3] [--package cowsay] [--user NAME] [--store DIR]

The build is `--from-debootstrap bookworm --apt PACKAGE --invalidate-layer`
(the base is made once, before timing): --invalidate-layer makes its apt
layer cold every time. Each round empties the caches (plash clean
--caches), then times a first build and a second one; before = the same
with --no-package-cache (apt downloads everything both times), after =
with the package caches. Rounds alternate before and after. Medians and
the ratio second / first go to stdout. As root, or with --user as that
user (through runuser, as the tests run their users). Needs the Debian
mirror and mmdebstrap (or debootstrap).
"""

from __future__ import annotations

import argparse
import os
import pwd
import statistics
import subprocess
import sys
import time


def command(args: argparse.Namespace, *words: str) -> list[str]:
    home = pwd.getpwnam(args.user).pw_dir if args.user else os.path.expanduser("~root")
    env = [f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}", f"HOME={home}", f"PLASH_DATA={args.store}",
           "LANG=C.UTF-8"]
    cmd = ["env", "-i", *env, args.plash, *words]
    return ["runuser", "-u", args.user, "--", *cmd] if args.user else cmd


def timed(args: argparse.Namespace, *words: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(command(args, *words), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        raise RuntimeError(f"plash {' '.join(words)} failed: {r.stderr.strip()[-1500:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("-n", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--package", default="cowsay")
    ap.add_argument("--user", help="run plash as this user (default: as the caller)")
    ap.add_argument("--store", help="the store to use (default /var/tmp/plash-bench-package-cache/USER)")
    ap.add_argument("--plash", default=os.path.join(os.path.dirname(sys.executable), "plash"))
    args = ap.parse_args()
    who = args.user or pwd.getpwuid(os.getuid()).pw_name
    if not args.store:
        top = "/var/tmp/plash-bench-package-cache"
        os.makedirs(top, 0o755, exist_ok=True)
        args.store = os.path.join(top, who)
        if args.user and not os.path.exists(args.store):
            os.mkdir(args.store, 0o700)
            pw = pwd.getpwnam(args.user)
            os.chown(args.store, pw.pw_uid, pw.pw_gid)
    base = ["--from-debootstrap", "bookworm"]
    build = ["build", "-q", *base, "--apt", args.package, "--invalidate-layer"]
    print(f"# {who}, store {args.store}: making the base once", file=sys.stderr)
    timed(args, "build", "-q", *base)
    times: dict[str, dict[str, list[float]]] = {m: {"first": [], "second": []} for m in ("before", "after")}
    for i in range(args.n):
        for mode in ("before", "after") if i % 2 == 0 else ("after", "before"):
            extra = ["--no-package-cache"] if mode == "before" else []
            timed(args, "clean", "--caches")
            times[mode]["first"].append(timed(args, build[0], *extra, *build[1:]))
            times[mode]["second"].append(timed(args, build[0], *extra, *build[1:]))
            print(f"# round {i + 1} {mode}: first {times[mode]['first'][-1]:.2f}s, "
                  f"second {times[mode]['second'][-1]:.2f}s", file=sys.stderr)
    print(f"package cache bench: --from-debootstrap bookworm --apt {args.package} --invalidate-layer, "
          f"as {who}, {args.n} rounds (medians)")
    for mode, label in (("before", "before (--no-package-cache)"), ("after", "after (package caches)")):
        first, second = statistics.median(times[mode]["first"]), statistics.median(times[mode]["second"])
        print(f"{label:<30} first {first:6.2f}s  second {second:6.2f}s  second/first {second / first:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
