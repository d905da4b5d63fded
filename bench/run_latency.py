"""Startup latency of `plash run IMAGE true` next to python3, unshare+chroot, bwrap and podman.

Also times a fully cached `plash build` and a warm plash executable (a build
file with `#!/usr/bin/env plash` whose layers are all cached).

    python bench/run_latency.py [-n 30] [--plash PATH] [--json]

Builds a busybox root file system from /bin/busybox (Debian's busybox-static),
imports it into a throw-away store ($PLASH_DATA in a temp dir), then times each
command N times (after 3 warm-up runs), interleaved round-robin so that machine
noise hits all of them alike. Runs as root or as an ordinary user; stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
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
TARGET = 2.5
TARGETS = {"plash run": 2.5, "warm executable": 3.5, "plash build (cached)": 3.5}
BASELINE = "python3 -c pass"


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
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    if args.n < 1:
        ap.error("-n must be at least 1")
    plash = find_plash(args.plash)
    tmp = tempfile.mkdtemp(prefix="plash-bench-")
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
        exe = os.path.join(tmp, "tool")
        with open(exe, "w") as f:
            f.write(f"#!/usr/bin/env plash\n--from {image}\n--run\necho layer > /layer\n--entrypoint true\n")
        os.chmod(exe, 0o755)
        build = [plash, "build", "--from", image, "--run", "echo layer > /layer", "--layer", "--run", "true"]

        cands: list[tuple[str, list[str], dict[str, str] | None]] = [
            (BASELINE, [sys.executable, "-c", "pass"], None),
            (f"plash run {image} true", [plash, "run", image, "true"], penv),
            ("unshare -rm chroot", ["unshare", "-rm", "chroot", rootfs, "true"], None),
            ("warm executable", [exe], penv),
            ("plash build (cached)", build, penv),
        ]
        notes: dict[str, str] = {}
        if shutil.which("bwrap"):
            cands.append(("bwrap", ["bwrap", "--bind", rootfs, "/", "--dev", "/dev", "--proc", "/proc", "true"], None))
        else:
            notes["bwrap"] = "not installed"
        if shutil.which("podman"):
            cands.append(("podman run --rm", ["podman", "run", "--rm", "--rootfs", rootfs, "true"], None))
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
            for name, cmd, env in cmds:
                t0 = time.perf_counter()
                subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if i >= WARMUP:
                    times[name].append((time.perf_counter() - t0) * 1000)

        base = statistics.median(times[BASELINE]) if times.get(BASELINE) else math.nan
        rows: list[dict[str, Any]] = [{"name": n, "median_ms": statistics.median(t), "p90_ms": percentile(t, 0.9),
                 "ratio": statistics.median(t) / base} for n, t in times.items()]
        plash_row = next((r for r in rows if r["name"].startswith("plash run")), None)
        plash_ratio = plash_row["ratio"] if plash_row else None
        if args.json:
            json.dump({"runs": args.n, "warmup": WARMUP, "plash": plash, "results": rows, "skipped": notes,
                       "plash_ratio": plash_ratio, "target": TARGET}, sys.stdout, indent=2)
            print()
        else:
            print(f"{'command':<24} {'median ms':>10} {'p90 ms':>10} {'ratio':>7}   (n={args.n})")
            for r in rows:
                print(f"{r['name']:<24} {r['median_ms']:>10.2f} {r['p90_ms']:>10.2f} {r['ratio']:>6.2f}x")
            for name, why in notes.items():
                print(f"{name:<24} skipped: {why}")
            for prefix, target in TARGETS.items():
                row = next((r for r in rows if r["name"].startswith(prefix)), None)
                ratio = f"{row['ratio']:.2f}x" if row else "n/a"
                print(f"{prefix} / python3 -c pass = {ratio} (target <= {target}x)")
        return 0
    finally:  # files of subordinate uids in the store: only plash can delete them
        if os.path.isdir(penv["PLASH_DATA"]):
            subprocess.run([plash, "purge", "--yes"], env=penv, stdin=subprocess.DEVNULL, capture_output=True)
        rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())
