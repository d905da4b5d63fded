"""CI runners start empty: plash warm with a registry layer cache, without one, and buildah with its cache.

    python bench/ci_cache.py [-n 2] [--rootfs debian.tar] [--package cowsay]

A Debian root file system (made with mmdebstrap unless --rootfs gives a
tarball) goes as a one-layer OCI image to Debian's docker-registry on
127.0.0.1. Eight executables share that base and an `apt-get install`
layer and have one small layer of their own each; the same as eight
Containerfiles for buildah. An earlier run fills a cache repository for
each tool (plash warm --cache-to, buildah build --layers --cache-to), then,
each on a fresh store, N times:

    plash warm --cache-from   vs  plash warm (no cache)  vs  buildah build --layers --cache-from (x8)

Also `plash push` of the Debian image (a fresh repository, nothing pushed
before) against `skopeo copy` of the same tree from an uncompressed OCI
layout (skopeo compresses it on the way, as push does). Medians and ratios
go to stdout. Needs the Debian mirror for the apt layer, docker-registry,
skopeo and buildah (its rows are skipped when it is not installed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fetch import debian_tar
from oci_images import Layout
from servers import Registry

N_EXES = 8


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-800:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2)
    ap.add_argument("--rootfs", help="a Debian rootfs tarball (default: made with mmdebstrap)")
    ap.add_argument("--package", default="cowsay", help="what the shared layer installs with apt-get")
    ap.add_argument("--plash", default=os.path.join(os.path.dirname(sys.executable), "plash"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="plash-bench-cache-", dir="/var/tmp")
    os.chdir(work)  # commands run here: an older plash's launchers imported from the current directory
    reg = None
    try:
        rootfs = debian_tar(args.rootfs, work)
        layout = Layout(Path(work) / "layout")
        layout.image([(rootfs, "gzip")], tag="debian", env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
        layout.write()
        plain = Layout(Path(work) / "plain")
        plain.image([(rootfs, "plain")], tag="debian")
        plain.write()
        reg = Registry(work)
        reg.push(str(layout.path), "debian", "bench/debian:1")
        base = f"{reg.host}/bench/debian:1"
        apt = (f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
               f"--no-install-recommends {args.package} && rm -rf /var/lib/apt/lists/*")
        exes, containerfiles = [], []
        for i in range(N_EXES):
            f = Path(work, f"tool{i}")
            f.write_text(f"#!/usr/bin/env plash\n--from-docker {base}\n--run\n{apt}\n--layer\n--run\n"
                         f"echo tool {i} > /own\n--entrypoint /bin/cat\n")
            f.chmod(0o755)
            exes.append(str(f))
            c = Path(work, f"Containerfile{i}")
            c.write_text(f"FROM {base}\nRUN {apt}\nRUN echo tool {i} > /own\nENTRYPOINT [\"/bin/cat\"]\n")
            containerfiles.append(str(c))
        conf = Path(work, "containers.conf")
        conf.write_text("[containers]\ndefault_ulimits = []\n")  # no rlimits to raise when this runs in a container
        env = dict(os.environ, CONTAINERS_CONF=str(conf))
        plash_cache, buildah_cache = f"{reg.host}/cache/plash", f"{reg.host}/cache/buildah"
        have_buildah = shutil.which("buildah") is not None

        def buildah_all(store: str, *extra: str) -> list[list[str]]:
            return [["buildah", "--root", f"{store}/root", "--runroot", f"{store}/run", "--storage-driver", "vfs",
                     "build", "--quiet", "--layers", "--isolation", "chroot", "--tls-verify=false",
                     "--cache-from", buildah_cache, *extra, "-f", c, "-t", f"localhost/tool{i}", work]
                    for i, c in enumerate(containerfiles)]

        # fill the caches, once, as the first CI job would
        timed([args.plash, "warm", "--quiet", "-j", "4", "--cache-to", plash_cache, *exes],
              dict(env, PLASH_DATA=f"{work}/fill-plash"))
        if have_buildah:
            for cmd in buildah_all(f"{work}/fill-buildah", "--cache-to", buildah_cache):
                timed(cmd, env)
        rows: dict[str, list[float]] = {}
        for n in range(args.n):
            cases = [
                ("plash warm --cache-from", [[args.plash, "warm", "--quiet", "-j", "4", "--cache-from", plash_cache,
                                              *exes]], f"{work}/r{n}-cached"),
                ("plash warm, no cache", [[args.plash, "warm", "--quiet", "-j", "4", *exes]], f"{work}/r{n}-none"),
            ]
            if have_buildah:
                cases.append(("buildah build --cache-from (x8)", buildah_all(f"{work}/r{n}-buildah"), ""))
            for name, cmds, store in cases:
                subprocess.run(["sync"])
                rows.setdefault(name, []).append(sum(timed(c, dict(env, PLASH_DATA=store)) for c in cmds))
            # push: the imported Debian image to a registry that has never seen it, remembering nothing
            store = f"{work}/r{n}-cached"
            for record in Path(store).rglob("packed.json"):
                record.unlink()
            image = subprocess.run([args.plash, "import-docker", "--quiet", base], env=dict(env, PLASH_DATA=store),
                                   check=True, capture_output=True, text=True).stdout.strip()
            for name in ("plash push", "skopeo copy (compressing)"):
                os.makedirs(f"{work}/push{n}-{len(name)}")
                fresh = Registry(f"{work}/push{n}-{len(name)}")  # and skopeo's blob cache knows no place there
                try:
                    cmd = ([args.plash, "push", "--quiet", image, f"{fresh.host}/pushed/debian:1"] if name == "plash push"
                           else ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-compress",
                                 "--dest-compress-format", "gzip", f"oci:{plain.path}:debian",
                                 f"docker://{fresh.host}/pushed/debian:1"])
                    rows.setdefault(name, []).append(timed(cmd, dict(env, PLASH_DATA=store)))
                finally:
                    fresh.close()
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"{N_EXES} executables: a {len(rootfs) / 1e6:.0f} MB Debian base, a shared apt-get install "
              f"{args.package} layer, one own layer each; n={args.n}")
        for k, v in med.items():
            print(f"{k:<34} {v:8.2f} s")
        cached = med["plash warm --cache-from"]
        print(f"plash --cache-from / plash without a cache = {cached / med['plash warm, no cache']:.2f}x (target <= 0.2x)")
        if have_buildah:
            print(f"plash --cache-from / buildah --cache-from = {cached / med['buildah build --cache-from (x8)']:.2f}x"
                  " (target <= 0.5x)")
        print(f"plash push / skopeo copy = {med['plash push'] / med['skopeo copy (compressing)']:.2f}x (target <= 1.5x)")
        return 0
    finally:
        if reg:
            reg.close()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
