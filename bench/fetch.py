"""Image import speed: plash against podman, skopeo and tar, side by side in one run.

    python bench/fetch.py [-n 5] [--rootfs debian.tar] [--only split,bookworm,lxc] [--before PLASH]

A Debian root file system (made with mmdebstrap unless --rootfs gives a
tarball) is made into two OCI images, pushed by skopeo to Debian's
docker-registry on 127.0.0.1, and also published as rootfs.tar.xz on an
LXC-style image server on 127.0.0.1:

    split     the rootfs split by path into 4 layers of similar size
    bookworm  shaped like debian:bookworm and the images built on it: one
              big base layer (all but /etc and /var) and 3 small layers

Then N rounds, each running every case once from scratch (the order turns
from round to round, so no case always runs first or after the same one):

    plash import-docker  vs  podman pull, skopeo copy (the bytes alone)
    plash import-lxc     vs  tar -xJf, xz -dc > /dev/null (decompression alone)

With --before, a second plash command (say, an older version) runs in
the same rounds. Medians and ratios go to stdout. Runs as any user: rows of a tool that
fails for this user (podman without a subuid range) say so and are left out.
Needs docker-registry and skopeo.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from oci_images import Layout
from servers import Registry, Server, add_lxc_image

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
# members under these prefixes go to layers of their own, in this order (the rest to the last layer)
SPLIT = ("usr/share/", "usr/lib/", "usr/")
# members under these go to small layers after the base layer, which holds the rest
SMALL = ("var/lib/", "var/", "etc/")
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]


def debian_tar(path: str | None, work: str) -> bytes:
    if path:
        return Path(path).read_bytes()
    out = os.path.join(work, "debian.tar")
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", out], check=True)
    return Path(out).read_bytes()


def split_layers(rootfs: bytes, prefixes: tuple[str, ...], base_first: bool = False) -> list[bytes]:
    """Split a rootfs tarball into layers by path prefix (dirs go where their members are).

    A member goes to the layer of the first prefix it has, or to the layer
    of the rest: the last one, or the first one with base_first.
    """
    bufs = [io.BytesIO() for _ in range(len(prefixes) + 1)]
    tars = [tarfile.open(fileobj=b, mode="w") for b in bufs]  # noqa: SIM115 (closed below, each)

    def layer_of(name: str) -> int:
        i = next((k for k, p in enumerate(prefixes) if name.lstrip("./").startswith(p)), len(prefixes))
        return (i + 1) % len(bufs) if base_first else i

    with tarfile.open(fileobj=io.BytesIO(rootfs)) as src:
        for m in src:
            # a hard link goes to the layer of its target
            tars[layer_of(m.linkname if m.islnk() else m.name)].addfile(m, src.extractfile(m) if m.isreg() else None)
    for t in tars:
        t.close()
    return [b.getvalue() for b in bufs]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-300:]}")
    return dt


class Case:
    """One tool's run, made afresh for each round: its steps (commands) in the round's own directory."""

    def __init__(self, name: str, steps: Callable[[str], list[tuple[list[str], dict[str, str]]]]) -> None:
        self.name = name
        self.steps = steps  # the round's dir -> the commands and their environments
        self.times: list[float] = []
        self.failed = ""


def cases(args: argparse.Namespace, refs: dict[str, str], work: str, runroot: str, lxc_url: str) -> list[Case]:
    base = dict(os.environ, PLASH_LXC_URL=lxc_url)
    conf = Path(work, "containers.conf")
    conf.write_text("[containers]\ndefault_ulimits = []\n")  # no rlimits to raise when this runs in a container
    podman_env = dict(base, CONTAINERS_CONF=str(conf))
    out: list[Case] = []
    plashes = [("plash", args.plash)] + ([("plash-before", args.before)] if args.before else [])
    for image, ref in refs.items():
        for label, exe in plashes:
            out.append(Case(f"{label} import-docker [{image}]", lambda d, ref=ref, image=image, label=label, exe=exe: [
                ([exe, "import-docker", "--quiet", ref], dict(base, PLASH_DATA=f"{d}/{label}-{image}"))]))
        if shutil.which("podman"):
            out.append(Case(f"podman pull [{image}]", lambda d, ref=ref, image=image: [
                ([*PODMAN, "--root", f"{d}/podman-{image}", "--runroot", f"{runroot}/{Path(d).name}-{image}",
                  "pull", "-q", "--tls-verify=false", ref], podman_env)]))
        out.append(Case(f"skopeo copy [{image}]", lambda d, ref=ref, image=image: [
            (["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{d}/skopeo-{image}:1"],
             base)]))
    if "lxc" in args.only:
        not_root = ["--exclude=dev/*"] if os.getuid() else []  # device nodes: only root may make them
        xz = f"{work}/rootfs.tar.xz"
        for label, exe in plashes:
            out.append(Case(f"{label} import-lxc", lambda d, label=label, exe=exe: [
                ([exe, "import-lxc", "--quiet", "debian:bench"], dict(base, PLASH_DATA=f"{d}/{label}-lxc"))]))
        out.append(Case("tar -xJf", lambda d: [
            (["mkdir", f"{d}/tarx"], base), (["tar", "-xJf", xz, "-C", f"{d}/tarx", *not_root], base)]))
        out.append(Case("xz -dc", lambda d: [(["sh", "-c", f"xz -dc {xz} > /dev/null"], base)]))
    return out


def run_rounds(todo: list[Case], n: int, work: str) -> None:
    for i in range(n):
        d = os.path.join(work, f"run{i}")
        os.makedirs(d)
        shift = i % len(todo)
        for case in todo[shift:] + todo[:shift]:
            if case.failed:
                continue
            subprocess.run(["sync"])
            try:
                steps = case.steps(d)
                case.times.append(sum(timed(cmd, env) for cmd, env in steps))
            except RuntimeError as e:
                case.failed = (str(e).strip().splitlines() or ["failed"])[-1][-200:]
                print(f"  {case.name}: left out ({case.failed})", file=sys.stderr)
        print(f"  round {i + 1}/{n} done", file=sys.stderr)


def report(todo: list[Case], rootfs: int, xz: int, shapes: dict[str, list[int]], n: int) -> None:
    user = os.environ.get("USER") or str(os.getuid())
    print(f"as {user} (uid {os.getuid()}); n={n}; Debian minbase rootfs {rootfs / 1e6:.0f} MB; "
          f"rootfs.tar.xz {xz / 1e6:.0f} MB")
    for image, sizes in shapes.items():
        print(f"  image {image}: {len(sizes)} gzip layers of " + ", ".join(f"{s / 1e6:.1f}" for s in sizes) + " MB")
    med = {c.name: statistics.median(c.times) for c in todo if c.times and not c.failed}
    for c in todo:
        if c.name in med:
            spread = f"{min(c.times):.2f}-{max(c.times):.2f}"
            print(f"{c.name:<32} {med[c.name]:7.2f} s  (range {spread})")
        else:
            print(f"{c.name:<32} left out: {c.failed}")

    def ratio(a: str, b: str, target: str = "") -> None:
        if a in med and b in med:
            print(f"{a} / {b} = {med[a] / med[b]:.2f}x{f'  (target {target})' if target else ''}")

    for image in shapes:
        ratio(f"plash import-docker [{image}]", f"podman pull [{image}]", "<= 0.4x")
        ratio(f"plash-before import-docker [{image}]", f"podman pull [{image}]")
        ratio(f"plash import-docker [{image}]", f"skopeo copy [{image}]")
        ratio(f"skopeo copy [{image}]", f"podman pull [{image}]")
    ratio("plash import-lxc", "tar -xJf", "<= 1.0x")
    ratio("plash-before import-lxc", "tar -xJf")
    ratio("xz -dc", "tar -xJf")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--rootfs", help="a Debian rootfs tarball (default: made with mmdebstrap)")
    ap.add_argument("--only", default="split,bookworm,lxc", help="which of split, bookworm, lxc to run")
    ap.add_argument("--plash", default=os.path.join(os.path.dirname(sys.executable), "plash"))
    ap.add_argument("--before", help="another plash command (an older version, say) to time beside --plash")
    args = ap.parse_args()
    args.only = set(args.only.split(","))
    work = tempfile.mkdtemp(prefix="plash-bench-fetch-", dir="/var/tmp")
    os.chdir(work)  # commands run here: an older plash's launchers imported from the current directory
    os.chmod(work, 0o755)
    runroot = tempfile.mkdtemp(prefix="pr", dir="/tmp")  # podman's run dirs: their path may not be long
    if os.getuid() and not os.environ.get("XDG_RUNTIME_DIR"):  # (runuser sets none) skopeo's and podman's run dir
        os.environ["XDG_RUNTIME_DIR"] = runroot
    reg = server = None
    todo: list[Case] = []
    try:
        rootfs = debian_tar(args.rootfs, work)
        layout = Layout(Path(work) / "layout")
        images = {"split": split_layers(rootfs, SPLIT), "bookworm": split_layers(rootfs, SMALL, base_first=True)}
        shapes: dict[str, list[int]] = {}
        for image, layers in images.items():
            if image in args.only:
                desc = layout.image([(layer, "gzip6") for layer in layers], tag=image)
                manifest = json.loads((layout.path / "blobs" / "sha256" / desc["digest"][7:]).read_bytes())
                shapes[image] = [d["size"] for d in manifest["layers"]]
        layout.write()
        reg = Registry(work)
        refs = {}
        for image in shapes:
            reg.push(str(layout.path), image, f"bench/debian-{image}:1")
            refs[image] = f"{reg.host}/bench/debian-{image}:1"
        xz = lzma.compress(rootfs, preset=6)
        Path(work, "rootfs.tar.xz").write_bytes(xz)
        server = Server()
        add_lxc_image(server, "debian", "bench", ARCH, xz)
        # Every run writes into a directory of its own and nothing is deleted until
        # the end: on ext4 without a journal, creating files in the 30 s after a
        # mass deletion makes the inode allocator skip the recently deleted inodes
        # one by one, which would slow whichever tool runs after a clean-up.
        todo = cases(args, refs, work, runroot, server.url)
        run_rounds(todo, args.n, work)
        report(todo, len(rootfs), len(xz), shapes, args.n)
        return 0
    finally:
        if reg:
            reg.close()
        if server:
            server.close()
        for d in Path(work).glob("run*/podman-*"):  # its overlay mounts, if any; a user's files of subuids
            subprocess.run([*PODMAN, "--root", str(d), "--runroot", f"{runroot}/rmi", "rmi", "-af"],
                           capture_output=True)
            if os.getuid():
                subprocess.run(["podman", "unshare", "rm", "-rf", str(d)], capture_output=True)
        subprocess.run(["rm", "-rf", work, runroot])


if __name__ == "__main__":
    sys.exit(main())
