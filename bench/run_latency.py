"""Startup latency of `plash run IMAGE true` next to python3, unshare+chroot, bwrap and podman.

Also times a fully cached `plash build`, a warm plash executable (a build
file with `#!/usr/bin/env plash` whose layers are all cached) and a cold
build of 10 layers each `--run true` (against 10 x `python3 -c pass`).

    python bench/run_latency.py [-n 30] [--plash PATH] [--before PATH] [--json]

--before PATH times a second plash (an older tree's) in the same rounds.

Builds a busybox root file system from /bin/busybox (Debian's busybox-static),
imports it into a throw-away store ($PLASH_DATA in a temp dir), then times each
command N times (after 3 warm-up runs), interleaved: every round runs each command
once, in an order of its own, so that machine noise and the command before hit all
alike. Runs as root or as an ordinary user; stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import stat
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from typing import Any

WARMUP = 3
TARGET = 1.0
TARGETS = {"plash run": 1.0, "warm executable": 1.2, "plash build (cached)": 1.2, "cold 10 layers": 2.0}
BASELINE = "python3 -c pass"
COLD_LAYERS = 10


def find_plash(opt: str | None) -> str:
    sibling = os.path.join(os.path.dirname(sys.executable), "plash")
    return opt or (sibling if os.access(sibling, os.X_OK) else (shutil.which("plash") or "plash"))


def make_rootfs(root: str) -> None:
    for d in ("bin", "etc", "root", "tmp", "proc", "dev", "sys"):
        os.makedirs(os.path.join(root, d), mode=0o755)
    shutil.copy2("/bin/busybox", os.path.join(root, "bin/busybox"))
    out = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout
    for applet in out.split():
        if applet != "busybox":
            os.symlink("busybox", os.path.join(root, "bin", applet))
    with open(os.path.join(root, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")


def as_root(ti: tarfile.TarInfo) -> tarfile.TarInfo:
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def works(cmd: list[str], env: dict[str, str] | None = None) -> str | None:
    """None if cmd runs and exits 0, else why not."""
    try:
        p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if p.returncode == 0:
        return None
    lines = (p.stderr or p.stdout).strip().splitlines()
    return f"exit {p.returncode}: {lines[-1] if lines else ''}"


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def rmtree(path: str) -> None:
    def onerror(func: Callable[..., Any], p: str, _exc: Any) -> None:
        for q in (os.path.dirname(p), p):
            with contextlib.suppress(OSError, NotImplementedError):
                os.chmod(q, stat.S_IRWXU, follow_symlinks=False)
        func(p)

    shutil.rmtree(path, onerror=onerror)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=30, help="timed runs per command (default 30)")
    ap.add_argument("--plash", help="plash executable (default: next to this python, else on PATH)")
    ap.add_argument("--before", help="a second plash to time in the same rounds (rows marked 'before')")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    if args.n < 1:
        ap.error("-n must be at least 1")
    plash = find_plash(args.plash)
    tmp = tempfile.mkdtemp(prefix="plash-bench-")
    os.chdir(tmp)  # commands run here: an older plash's launchers imported from the current directory
    penv = dict(os.environ, PLASH_DATA=os.path.join(tmp, "store"))
    try:
        rootfs, tarball = os.path.join(tmp, "rootfs"), os.path.join(tmp, "rootfs.tar.gz")
        make_rootfs(rootfs)
        with tarfile.open(tarball, "w:gz") as tar:  # owned by root, as in a real image
            tar.add(rootfs, arcname=".", filter=as_root)
        try:
            imp = subprocess.run([plash, "import-tar", tarball], env=penv, capture_output=True, text=True)
        except OSError as e:
            sys.exit(f"cannot run {plash}: {e}")
        if imp.returncode != 0:
            sys.exit(f"plash import-tar failed ({imp.returncode}): {imp.stderr.strip()}")
        image = imp.stdout.strip()
        penv["PATH"] = os.path.dirname(os.path.abspath(plash)) + ":" + os.environ.get("PATH", "/usr/bin:/bin")
        build = [plash, "build", "--from", image, "--run", "echo layer > /layer", "--layer", "--run", "true"]

        cold = [plash, "build", "--no-cache", "-q", "--from", image]
        for _ in range(COLD_LAYERS):
            cold += ["--run", "true", "--layer"]
        cands: list[tuple[str, list[str], dict[str, str] | None]] = [
            (BASELINE, [sys.executable, "-c", "pass"], None),
            ("python3 -S -c pass", [sys.executable, "-S", "-c", "pass"], None),
            ("unshare -rm chroot", ["unshare", "-rm", "chroot", rootfs, "true"], None),
        ]
        plashes = [("", plash)] + ([(" (before)", args.before)] if args.before else [])
        for mark, p in plashes:
            tool = os.path.join(tmp, f"tool{len(mark)}")  # an executable of its own: the memo is per file
            with open(tool, "w") as f:
                f.write(f"#!{p}\n--from {image}\n--run\necho layer > /layer\n--entrypoint true\n")
            os.chmod(tool, 0o755)
            cands += [
                (f"plash run {image} true{mark}", [p, "run", image, "true"], penv),
                (f"warm executable{mark}", [tool], penv),
                (f"plash build (cached){mark}", [p, *build[1:]], penv),
                (f"cold {COLD_LAYERS} layers{mark}", [p, *cold[1:]], penv),
            ]
        notes: dict[str, str] = {}
        if shutil.which("bwrap"):
            cands.append(("bwrap", ["bwrap", "--bind", rootfs, "/", "--dev", "/dev", "--proc", "/proc", "true"], None))
        else:
            notes["bwrap"] = "not installed"
        if shutil.which("podman"):
            # storage of its own, runc, and no default ulimits (a container may not raise them)
            conf = os.path.join(tmp, "containers.conf")
            with open(conf, "w") as f:
                f.write("[containers]\ndefault_ulimits = []\n")
            penv_podman = dict(os.environ, CONTAINERS_CONF=conf)
            podman = ["podman", "--root", os.path.join(tmp, "podman"), "--runroot", os.path.join(tmp, "podman-run"),
                      "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
            cands.append(("podman run --rm", [*podman, "run", "--rm", "--rootfs", rootfs, "true"], penv_podman))
            ctx = os.path.join(tmp, "podman-ctx")
            os.makedirs(ctx)
            with open(os.path.join(ctx, "Containerfile"), "w") as f:
                f.write("FROM localhost/plash-bench-busybox\n" + "RUN true\n" * COLD_LAYERS)
            why = works([*podman, "import", tarball, "localhost/plash-bench-busybox"], penv_podman)
            if why is None:
                cands.append((f"podman build {COLD_LAYERS} RUN", [*podman, "build", "--no-cache", "-q", ctx],
                              penv_podman))
            else:
                notes[f"podman build {COLD_LAYERS} RUN"] = f"unavailable (podman import: {why})"
        else:
            notes["podman run --rm"] = "not installed"
        cmds: list[tuple[str, list[str], dict[str, str] | None]] = []
        for name, cmd, env in cands:
            why = works(cmd, env)
            if why is None:
                cmds.append((name, cmd, env))
            else:
                notes[name] = f"unavailable ({why})"

        times: dict[str, list[float]] = {name: [] for name, _, _ in cmds}
        for i in range(WARMUP + args.n):
            # a new order every round: what runs just before a command (a cold build, a
            # tiny unshare) changes its time by milliseconds, so no command may always follow the same one
            order = list(cmds)
            random.Random(i).shuffle(order)
            for name, cmd, env in order:
                t0 = time.perf_counter()
                subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if i >= WARMUP:
                    times[name].append((time.perf_counter() - t0) * 1000)

        base = statistics.median(times[BASELINE]) if times.get(BASELINE) else math.nan
        def per(name: str) -> float:  # the cold build is compared with one python start per layer
            return base * COLD_LAYERS if name.startswith(("cold ", "podman build")) else base

        rows: list[dict[str, Any]] = [{"name": n, "median_ms": statistics.median(t), "p90_ms": percentile(t, 0.9),
                 "ratio": statistics.median(t) / per(n)} for n, t in times.items()]
        plash_row = next((r for r in rows if r["name"].startswith("plash run")), None)
        plash_ratio = plash_row["ratio"] if plash_row else None
        if args.json:
            json.dump({"runs": args.n, "warmup": WARMUP, "plash": plash, "results": rows, "skipped": notes,
                       "plash_ratio": plash_ratio, "target": TARGET}, sys.stdout, indent=2)
            print()
        else:
            print(f"{'command':<32} {'median ms':>10} {'p90 ms':>10} {'ratio':>7}   (n={args.n})")
            for r in rows:
                print(f"{r['name']:<32} {r['median_ms']:>10.2f} {r['p90_ms']:>10.2f} {r['ratio']:>6.2f}x")
            for name, why in notes.items():
                print(f"{name:<32} skipped: {why}")
            for mark, _ in plashes:
                for prefix, target in TARGETS.items():
                    row = next((r for r in rows if r["name"].startswith(prefix) and r["name"].endswith(mark or "")
                                and (mark or not r["name"].endswith(" (before)"))), None)
                    ratio = f"{row['ratio']:.2f}x" if row else "n/a"
                    per_what = f"{COLD_LAYERS} x python3 -c pass" if prefix.startswith("cold") else "python3 -c pass"
                    print(f"{prefix}{mark} / {per_what} = {ratio} (target <= {target}x)")
                cold_row = next((r for r in rows if r["name"] == f"cold {COLD_LAYERS} layers{mark}"), None)
                pod = next((r for r in rows if r["name"].startswith("podman build")), None)
                if cold_row and pod:
                    print(f"cold {COLD_LAYERS} layers{mark} / podman build --no-cache = "
                          f"{cold_row['median_ms'] / pod['median_ms']:.2f}x (target <= 0.1x)")
        return 0
    finally:  # files of subordinate uids in the store: only plash can delete them
        if os.path.isdir(os.path.join(tmp, "podman")):
            subprocess.run(["podman", "--root", os.path.join(tmp, "podman"), "--runroot", os.path.join(tmp, "podman-run"),
                            "system", "reset", "--force"], capture_output=True, stdin=subprocess.DEVNULL)
        if os.path.isdir(penv["PLASH_DATA"]):
            subprocess.run([plash, "purge", "--yes"], env=penv, stdin=subprocess.DEVNULL, capture_output=True)
        rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())
