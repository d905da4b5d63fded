"""plash warm against serial and concurrent `plash build`, on 8 executables sharing a base and a layer.

    python bench/warm.py [--step-seconds 1.0] [--own-seconds 0.25]

Each executable: the same busybox base, one shared layer (`sleep S`, the
heavy part they have in common, say their packages), then its own layer
(`sleep O`, say its script and settings). The longest single chain is
measured: one `plash build` of one executable, alone, on the same base.
With -j 4 the 8 own layers need two waves, so the best warm can do is
S + 2*O; with --own-seconds as large as S that is 1.5x the chain. With
-j 8 they run in one wave: the best is the chain itself.
Prints wall times, ratios and peak memory (max RSS of a plash process).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import rootfs

N = 8


def run(cmds: list[list[str]], env: dict[str, str], parallel: bool) -> tuple[float, int]:
    """Wall time and the largest max RSS (KiB) of the given plash processes."""
    t0 = time.perf_counter()
    rss = 0
    if parallel:
        procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in cmds]
        for p in procs:
            _, status, usage = os.wait4(p.pid, 0)
            if os.waitstatus_to_exitcode(status):
                raise RuntimeError(f"{p.args} failed")
            rss = max(rss, usage.ru_maxrss)
    else:
        for c in cmds:
            p = subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(p.pid, 0)
            if os.waitstatus_to_exitcode(status):
                raise RuntimeError(f"{c} failed")
            rss = max(rss, usage.ru_maxrss)
    return time.perf_counter() - t0, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-seconds", type=float, default=1.0)
    ap.add_argument("--own-seconds", type=float, default=0.25)
    ap.add_argument("--plash", default=os.path.join(os.path.dirname(sys.executable), "plash"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="plash-bench-warm-"))
    os.chdir(work)  # commands run here: an older plash's launchers imported from the current directory
    try:
        tgz = work / "rootfs.tgz"
        with open(tgz, "wb") as f:
            rootfs.busybox_tar(f, "gz")
        s, own = args.step_seconds, args.own_seconds
        results: dict[str, tuple[float, int]] = {}
        for variant in ("one chain alone", "warm -j 4", "warm -j 8", "serial plash build", f"{N} concurrent plash build"):
            store = work / f"store-{len(results)}"
            env = dict(os.environ, PLASH_DATA=str(store))
            files = []
            for i in range(N):
                f = work / f"exe{i}"
                f.write_text(f"#!/usr/bin/env plash\n--from-tarball {tgz}\n--run\nsleep {s}; echo shared\n--layer\n"
                             f"--run\nsleep {own}; echo own {i}\n--entrypoint true\n")
                files.append(str(f))
            # the base import is the same for all variants: do it first, untimed
            subprocess.run([args.plash, "build", "--from-tarball", str(tgz)], env=env, check=True, capture_output=True)
            if variant == "one chain alone":
                results[variant] = run([[args.plash, "build", "--eval-file", files[0]]], env, parallel=False)
            elif variant.startswith("warm"):
                results[variant] = run([[args.plash, "warm", "-j", variant.split()[-1], *files]], env, parallel=False)
            else:
                cmds = [[args.plash, "build", "--eval-file", f] for f in files]
                results[variant] = run(cmds, env, parallel=not variant.startswith("serial"))
        chain = results["one chain alone"][0]
        print(f"{N} executables, shared base and layer: shared step {s:.2f}s, own steps {own:.2f}s")
        for k, (t, rss) in results.items():
            print(f"{k:<28} {t:7.2f} s   peak RSS {rss / 1024:6.1f} MB")
        warm_t = results["warm -j 4"][0]
        print(f"warm -j 4 / longest chain = {warm_t / chain:.2f}x (target <= 1.1x; "
              f"two waves of own steps at -j 4 bound it below by {(s + 2 * own) / (s + own):.2f}x)")
        print(f"warm -j 8 / longest chain = {results['warm -j 8'][0] / chain:.2f}x (target <= 1.1x; the floor is 1.0x)")
        print(f"warm / serial = {warm_t / results['serial plash build'][0]:.2f}x")
        print(f"warm / concurrent = {warm_t / results[f'{N} concurrent plash build'][0]:.2f}x")
        print(f"(this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB)")
        return 0
    finally:
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    sys.exit(main())
