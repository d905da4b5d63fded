"""Peak memory while pulling a big image: plash import-docker (and podman pull, when installed).

    python bench/memory.py [--mb 500] [--before PLASH]

Makes an OCI image of about MB megabytes of incompressible data in five
layers (one big file in the first, 1 MB files in the others; gzip level 1),
pushes it with skopeo to Debian's docker-registry on 127.0.0.1, then pulls
it once with each tool while sampling the summed resident memory of the
tool's whole process tree every 10 ms. Prints peak memory and wall time.
Target: plash at most 64 MB. With --before, a second plash command is
measured the same way.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from oci_images import Layout
from servers import Registry

PAGE = os.sysconf("SC_PAGE_SIZE")


def layer(files: list[tuple[str, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, size in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode = size, 0o644
            tar.addfile(info, io.BytesIO(os.urandom(size)))
    return buf.getvalue()


def tree_rss(root: int) -> int:
    """Summed RSS in bytes of root and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(name)
        children.setdefault(int(fields[1]), []).append(pid)  # fields[1] is the ppid
        rss[pid] = int(fields[21]) * PAGE  # rss in pages
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.01)
    took = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err.strip()[-500:]}")
    return took, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--plash", default=os.path.join(os.path.dirname(sys.executable), "plash"))
    ap.add_argument("--before", help="another plash command (an older version, say) to measure beside --plash")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="plash-bench-memory-", dir="/var/tmp")
    os.chdir(work)  # commands run here: an older plash's launchers imported from the current directory
    runroot = tempfile.mkdtemp(prefix="pr", dir="/tmp")  # podman's: its path may not be long
    podman = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
              "--root", f"{work}/podman", "--runroot", runroot]
    reg = None
    try:
        mb = 1 << 20
        per = args.mb // 5
        layers = [layer([("big.bin", per * mb)])]
        for i in range(1, 5):
            layers.append(layer([(f"d{i}/f{j}", mb) for j in range(per)]))
        layout = Layout(Path(work) / "layout")
        layout.image([(t, "gzip1") for t in layers], tag="big")
        layout.write()
        del layers
        reg = Registry(work)
        reg.push(str(layout.path), "big", "bench/big:1")
        ref = f"{reg.host}/bench/big:1"
        env = dict(os.environ, PLASH_DATA=os.path.join(work, "store"))
        rows = [("plash import-docker", [args.plash, "import-docker", "--quiet", ref])]
        if args.before:
            rows.append(("plash-before import-docker", [args.before, "import-docker", "--quiet", ref]))
        if shutil.which("podman"):  # with storage of its own: never the machine's
            rows.append(("podman pull", [*podman, "pull", "-q", "--tls-verify=false", ref]))
        print(f"image: {args.mb} MB of random data in 5 gzip layers, from docker-registry on 127.0.0.1")
        for i, (name, cmd) in enumerate(rows):
            took, peak = measure(cmd, dict(env, PLASH_DATA=os.path.join(work, f"store{i}")))
            print(f"{name:<28} {took:7.2f} s   peak memory {peak / mb:6.1f} MB (process tree, summed RSS)")
            if name == "plash import-docker":
                print(f"plash peak memory {'meets' if peak <= 64 * mb else 'MISSES'} the target of <= 64 MB")
        return 0
    finally:
        if reg:
            reg.close()
        if shutil.which("podman"):
            subprocess.run([*podman, "rmi", "-af"], capture_output=True)  # its overlay mounts, if any
        subprocess.run(["rm", "-rf", work, runroot])


if __name__ == "__main__":
    sys.exit(main())
