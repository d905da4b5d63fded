"""Import an OCI/Docker image from a registry: one plash layer per OCI layer, shared by key.

Layers download concurrently (bounded) and are unpacked while they stream,
each verified against its digest; they are published in order, since each
is the parent of the next. An empty top layer carries the image config
(Env, WorkingDir, Entrypoint/Cmd), so images that share all layers but
differ in config still share the layers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
from typing import Any, Awaitable, Callable, Literal, Protocol

import trio

from plash.engine.events import Event
from plash.engine.fetch import http, oci
from plash.engine.plan import digest as key_digest
from plash.errors import PlashError
from plash.lang.hashpath import sha256
from plash.store.layout import Store
from plash.store.staging import new_staging

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.jobs import Emit

Sink = Callable[[bytes], Awaitable[None]]
Progress = Callable[[int, "int | None"], None]

LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}
DOWNLOADS = int(os.environ.get("PLASH_DOWNLOADS", "4"))


def layer_keys(layers: list[dict]) -> list[str]:
    keys, parent = [], key_digest("oci-root")
    for layer in layers:
        parent = key_digest("oci-layer", parent, layer["digest"])
        keys.append(parent)
    return keys


def config_meta(config: object, where: str = "the image config") -> dict[str, list[str]]:
    """The run-time settings plash keeps from an OCI image config; FetchError naming where for a malformed one."""
    if not isinstance(config, dict):
        raise http.FetchError(f"{where}: not a JSON object")
    cfg = config.get("config")
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        raise http.FetchError(f"{where}: its config is not an object")

    def strings(key: str) -> list[str]:
        value = cfg.get(key) or []
        if isinstance(value, str) and key != "Env":  # Docker's own reader takes a string for a list of one
            value = [value]
        # a NUL byte cannot pass execve: say so now, not when the image runs
        if not isinstance(value, list) or not all(isinstance(v, str) and "\0" not in v for v in value):
            raise http.FetchError(f"{where}: config.{key} is not a list of strings")
        return value

    meta: dict[str, list[str]] = {}
    if env := strings("Env"):
        meta["oci_env"] = env
    workdir = cfg.get("WorkingDir") or ""
    if not isinstance(workdir, str) or "\0" in workdir:
        raise http.FetchError(f"{where}: config.WorkingDir is not a string")
    if workdir:
        meta["oci_workdir"] = [workdir]
    if cmd := strings("Entrypoint") + strings("Cmd"):
        meta["oci_cmd"] = cmd
    return meta


class RegistryBlobs:
    """Blobs from a registry, verified while they stream."""

    def __init__(self, c: object, reg: oci.Registry) -> None:
        self.c, self.reg = c, reg

    def label(self, desc: dict) -> str:
        return f"{self.reg.ref.repository}@{desc['digest'][7:19]}"

    async def fetch(self, desc: dict, sink: Sink, progress: Progress) -> None:
        url = self.reg.blob_url(desc["digest"])
        await http.stream(self.c, url, sink, _verified(url, desc), progress,  # type: ignore[arg-type]
                          headers=self.reg.headers())


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class FileBlobs:
    """Blobs from local files (an OCI layout dir, or members of a docker-archive tarball), verified too.

    opener gives each blob a reader of its own, since blobs are read side by
    side from threads; with serial=True they are read one at a time instead.
    """

    def __init__(self, opener: Callable[[dict], Readable], name: str, serial: bool = False) -> None:
        self.opener, self.name = opener, name
        self.serial = trio.Lock() if serial else None

    def label(self, desc: dict) -> str:
        return f"{self.name}@{desc['digest'][7:19]}"

    async def fetch(self, desc: dict, sink: Sink, progress: Progress) -> None:
        verify = _verified(f"{self.name} blob {desc['digest']}", desc) if desc.get("verify", True) else None
        async with self.serial or contextlib.nullcontext():
            f = await trio.to_thread.run_sync(self.opener, desc)
            done = 0
            try:
                while chunk := await trio.to_thread.run_sync(f.read, http.CHUNK):
                    if verify:
                        verify.update(chunk)
                    await sink(chunk)
                    done += len(chunk)
                    progress(done, desc.get("size"))
            finally:
                f.close()
        if verify:
            verify.check()


async def read_blob(blobs: RegistryBlobs | FileBlobs, desc: dict) -> bytes:
    raw = bytearray()

    async def keep(chunk: bytes) -> None:
        raw.extend(chunk)

    await blobs.fetch(desc, keep, lambda done, total: None)
    return bytes(raw)


async def import_registry(store: Store, ref_text: str, emit: Emit) -> int:
    if ref_text.startswith("oci:"):
        return await import_layout(store, ref_text[len("oci:"):], emit)
    if ref_text.startswith("docker-archive:"):
        return await import_archive(store, ref_text[len("docker-archive:"):], emit)
    ref = oci.parse_ref(ref_text)
    async with http.client() as c:
        reg = oci.Registry(c, ref)
        manifest, _ = await reg.manifest()
        return await import_manifest(store, RegistryBlobs(c, reg), manifest, str(ref), emit)


async def import_layout(store: Store, spec: str, emit: Emit) -> int:
    """oci:DIR[:TAG]: an OCI image layout directory."""
    path, _, tag = spec.partition(":") if not os.path.isdir(spec) else (spec, "", "")
    try:
        with open(os.path.join(path, "index.json"), "rb") as f:
            raw = f.read(oci.MANIFEST_LIMIT + 1)
    except OSError as e:
        raise PlashError(f"oci:{spec}: not an OCI image layout ({e.strerror})") from None
    if len(raw) > oci.MANIFEST_LIMIT:
        raise PlashError(f"oci:{spec}: index.json is larger than {oci.MANIFEST_LIMIT >> 20} MiB")
    index = oci.parse_json(raw, f"oci:{spec}", "index.json")

    def opener(desc: dict) -> Readable:
        algo, _, hexd = desc["digest"].partition(":")
        if algo != "sha256" or not hexd.isalnum():
            raise PlashError(f"oci:{spec}: unsupported digest {desc['digest']!r}")
        try:
            return open(os.path.join(path, "blobs", algo, hexd), "rb")
        except OSError as e:
            raise PlashError(f"oci:{spec}: missing blob {desc['digest']}: {e.strerror}") from None

    blobs = FileBlobs(opener, f"oci:{path}")
    entries = index.get("manifests", [])
    if not isinstance(entries, list) or not all(isinstance(m, dict) for m in entries):
        raise PlashError(f"oci:{spec}: index.json has no list of manifests")
    for m in entries:
        oci.check_descriptor(m, f"oci:{spec}: index.json", "a manifest entry")
    if tag:
        entries = [m for m in entries if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag]
    if len(entries) != 1:
        raise PlashError(f"oci:{spec}: {'no image tagged ' + tag if tag else 'several images: name one with oci:DIR:TAG'}"
                         if not (tag and entries) else f"oci:{spec}: several images tagged {tag}")
    entry = entries[0]
    doc = oci.parse_json(await read_blob(blobs, entry), f"oci:{spec}", "the manifest")
    if entry.get("mediaType") in oci.INDEX_TYPES or "manifests" in doc:
        entry = oci.choose_manifest(doc, where=f"oci:{spec}")
        doc = oci.parse_json(await read_blob(blobs, entry), f"oci:{spec}", "the manifest")
    return await import_manifest(store, blobs, doc, f"oci:{spec}", emit)


class _ByteRange(io.RawIOBase):
    """One member's bytes in a plain tarball, read through a file descriptor of its own."""

    def __init__(self, path: str, offset: int, size: int, what: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.pos, self.end, self.what = offset, offset + size, what

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        want = min(len(buf), self.end - self.pos)
        if want <= 0:
            return 0
        n = os.preadv(self.fd, [memoryview(buf)[:want]], self.pos)
        if n == 0:
            raise PlashError(f"{self.what}: the archive ends inside it (truncated)")
        self.pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


class _MemberReader:
    """A member's plain bytes (gzip and zstd layers decompressed), with read errors said as plash errors."""

    def __init__(self, stream: Readable, raw: Readable, what: str) -> None:
        self.stream, self.raw, self.what = stream, raw, what

    def read(self, n: int = -1, /) -> bytes:
        import tarfile
        import zlib

        import zstandard

        try:
            return self.stream.read(n)
        except (OSError, EOFError, zlib.error, zstandard.ZstdError, tarfile.TarError) as e:
            raise PlashError(f"{self.what}: cannot read it ({e})") from None

    def close(self) -> None:
        try:
            self.stream.close()
        finally:
            self.raw.close()


def _plain(raw: io.BufferedReader, what: str) -> _MemberReader:
    """A reader of raw's plain bytes: gzip and zstd are decompressed, anything else passes as it is."""
    try:
        magic = raw.peek(4)[:4]
    except (OSError, EOFError) as e:  # a gzip'd archive that ends early, say
        raw.close()
        raise PlashError(f"{what}: cannot read it ({e})") from None
    if magic.startswith(b"\x1f\x8b"):
        import gzip

        return _MemberReader(gzip.GzipFile(fileobj=raw, mode="rb"), raw, what)
    if magic == b"\x28\xb5\x2f\xfd":
        import zstandard

        return _MemberReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True), raw, what)
    return _MemberReader(raw, raw, what)


class ArchiveMembers:
    """The files of a docker-archive tarball by name (links followed), each opened with a reader of its own.

    Layers are read side by side from threads, so they must not share one
    tarfile object (its seeks and reads would interleave): the index gives
    each member's byte range once, and every reader opens the file itself.
    A compressed archive (docker save | gzip) has no byte ranges: its members
    are read through the tarfile, one at a time (serial).
    """

    def __init__(self, path: str) -> None:
        import tarfile

        self.path = path
        try:
            with open(path, "rb") as f:
                magic = f.read(6)
        except OSError as e:
            raise PlashError(f"docker-archive:{path}: cannot open: {e.strerror}") from None
        mode: Literal["r:", "r:gz", "r:bz2", "r:xz"] = "r:"
        if magic.startswith(b"\x1f\x8b"):
            mode = "r:gz"
        elif magic.startswith(b"BZh"):
            mode = "r:bz2"
        elif magic.startswith(b"\xfd7zXZ\x00"):
            mode = "r:xz"
        self.serial = mode != "r:"
        try:
            self.tar = tarfile.open(path, mode)
            self.files = {self._norm(m.name): m for m in self._members()}
        except (tarfile.TarError, OSError, EOFError, ValueError) as e:  # gzip, bz2 and lzma raise their own
            raise PlashError(f"docker-archive:{path}: not a tarball ({' '.join(str(e).split())})") from None

    def _members(self) -> list[Any]:
        """The archive's members, read one header after the other, refusing any that points back.

        Not tarfile's getmembers(): a member with a negative (base-256) size
        moves its offset backwards, and tarfile then reads the same headers
        for ever (the CVE-2025-8194 class). Offsets must grow, sizes be >= 0.
        """
        out = []
        last = -1
        while (m := self.tar.next()) is not None:
            if m.size < 0 or m.offset <= last or m.offset_data < m.offset:
                raise PlashError(f"docker-archive:{self.path}: corrupt tar header at byte {m.offset} "
                                 f"({m.name!r}: size {m.size})")
            last = m.offset
            out.append(m)
        return out

    @staticmethod
    def _norm(name: str) -> str:
        return posixpath.normpath("/" + name).lstrip("/")

    def member(self, name: str) -> Any:
        """The regular file that name is, or links to."""
        info = self.files.get(self._norm(name))
        for _ in range(16):  # link chains are short; a loop is not followed forever
            if info is None or not (info.issym() or info.islnk()):
                break
            target = posixpath.join(posixpath.dirname(info.name), info.linkname) if info.issym() else info.linkname
            info = self.files.get(self._norm(target))
        if info is None or not info.isreg() or info.issparse():
            raise PlashError(f"docker-archive:{self.path}: no file {name} in the archive")
        return info

    def open_raw(self, name: str) -> io.BufferedReader:
        info = self.member(name)
        what = f"docker-archive:{self.path}: {name}"
        if self.serial:
            f = self.tar.extractfile(info)  # a BufferedReader (tarfile.ExFileObject); FileBlobs holds the lock
            assert isinstance(f, io.BufferedReader)
            return f
        return io.BufferedReader(_ByteRange(self.path, info.offset_data, info.size, what), http.CHUNK)

    def open(self, name: str) -> Readable:
        """A reader of the member's plain bytes: gzip and zstd layers are decompressed."""
        return _plain(self.open_raw(name), f"docker-archive:{self.path}: {name}")

    def read(self, name: str) -> bytes:
        """A small member's bytes, as they are."""
        raw = self.open_raw(name)
        f = _MemberReader(raw, raw, f"docker-archive:{self.path}: {name}")
        try:
            return f.read()
        finally:
            f.close()

    def close(self) -> None:
        self.tar.close()


async def import_archive(store: Store, path: str, emit: Emit) -> int:
    """docker-archive:FILE: the output of `docker save` or `podman save` (manifest.json, config, layer tarballs)."""
    members = await trio.to_thread.run_sync(ArchiveMembers, path)
    try:
        return await _import_archive(store, members, emit)
    finally:
        members.close()


async def _import_archive(store: Store, members: ArchiveMembers, emit: Emit) -> int:
    name = f"docker-archive:{members.path}"
    if "manifest.json" not in members.files:
        raise PlashError(f"{name}: not a docker save archive (no manifest.json)")
    try:
        entries = json.loads(await trio.to_thread.run_sync(members.read, "manifest.json"))
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("Config"), str)
                                                    and isinstance(e.get("Layers"), list) for e in entries):
            raise ValueError("not a list of images with Config and Layers")
    except ValueError as e:
        raise PlashError(f"{name}: not a docker save archive (manifest.json: {e})") from None
    if len(entries) != 1:
        raise PlashError(f"{name}: holds {len(entries)} images, plash imports archives of one")
    entry = entries[0]
    config_raw = await trio.to_thread.run_sync(members.read, entry["Config"])
    try:
        config = json.loads(config_raw)
        diff_ids = config["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError) as e:
        raise PlashError(f"{name}: bad image config {entry['Config']} ({e})") from None
    if len(diff_ids) != len(entry["Layers"]) or not all(str(d).startswith("sha256:") for d in diff_ids):
        raise PlashError(f"{name}: the image config lists {len(diff_ids)} diff_ids for {len(entry['Layers'])} layers")
    # a layer's diff_id is the sha256 of its plain tarball, and that is what is verified: a gzip or
    # zstd member (docker save from a containerd store keeps the registry's blobs) is decompressed here
    layers = [{"digest": diff, "member": member, "mediaType": "application/vnd.oci.image.layer.v1.tar"}
              for diff, member in zip(diff_ids, entry["Layers"], strict=True)]
    config_digest = "sha256:" + sha256(config_raw).hexdigest()
    manifest = {"layers": layers, "config": {"digest": config_digest}, "_config": config}
    blobs = FileBlobs(lambda desc: members.open(desc["member"]), name, serial=members.serial)
    return await import_manifest(store, blobs, manifest, name, emit)


async def import_manifest(store: Store, blobs: RegistryBlobs | FileBlobs, manifest: dict, name: str, emit: Emit) -> int:
    from plash.engine.jobs import KeyLock, discard

    # the manifest and the config are checked whole before any layer is fetched or
    # published: a bad config found after the layers would leave them behind
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list):
        raise http.FetchError(f"{name}: the manifest has no list of layers")
    for i, layer in enumerate(layers):
        oci.check_descriptor(layer, name, f"layer {i + 1} of the manifest", need_size=False)
        if layer.get("mediaType") not in LAYER_TYPES:
            raise http.FetchError(f"{name}: unsupported layer type {str(layer.get('mediaType'))[:100]}")
    if "_config" in manifest:  # a docker archive's, read already
        config_desc = oci.check_descriptor(manifest.get("config"), name, "the config of the manifest", need_size=False)
        config, where = manifest["_config"], f"{name}: the image config"
    else:
        config_desc = oci.check_descriptor(manifest.get("config"), name, "the config of the manifest")
        where = (blobs.reg.blob_url(config_desc["digest"]) if isinstance(blobs, RegistryBlobs)
                 else f"{name}: the image config {config_desc['digest']}")
        if config_desc["size"] > oci.CONFIG_LIMIT:  # the digest check stops the download at the listed size
            raise http.FetchError(f"{where}: the image config is larger than {http.size_text(oci.CONFIG_LIMIT)}")
        seconds = http.document_timeout()
        with trio.move_on_after(seconds) as waiting:
            raw = await read_blob(blobs, config_desc)
        if waiting.cancelled_caught:
            raise http.FetchError(f"{where}: the image config did not arrive within {seconds:g} s "
                                  "(PLASH_HTTP_DOCUMENT_TIMEOUT)")
        config = oci.parse_json(raw, where, "the image config")
    meta = config_meta(config, where)
    keys = layer_keys(layers)
    final_key = key_digest("oci-config", keys[-1] if keys else "", config_desc["digest"])
    found = store.lookup_key(final_key)
    if found is not None:
        return found
    async with contextlib.AsyncExitStack() as locks:
        # one lock per missing layer, taken in key order so that imports sharing
        # layers cannot deadlock; whoever holds one downloads, the others reuse
        for key in sorted({k for k in [*keys, final_key] if store.lookup_key(k) is None}):
            await locks.enter_async_context(KeyLock(store, key, emit, f"layer {key[:12]} of {name}"))
        found = store.lookup_key(final_key)
        if found is not None:
            return found
        top = await _import_layers(store, blobs, layers, keys, emit)
        staging = new_staging(store, "oci-config", with_work=False)
        try:
            return store.publish(os.path.join(staging, "img"), top, meta, final_key)
        finally:
            await discard(staging, published=True)


async def _import_layers(store: Store, blobs: RegistryBlobs | FileBlobs, layers: list[dict], keys: list[str],
                         emit: Emit) -> int:
    from plash.engine.jobs import discard, unpack_child

    ids: list[int | None] = [store.lookup_key(k) for k in keys]
    limiter = trio.CapacityLimiter(DOWNLOADS)
    stagings: dict[int, str] = {}

    async def one(i: int) -> None:
        staging = stagings[i] = new_staging(store, "oci", with_work=False)
        async with limiter:
            await _fetch_layer(blobs, layers[i], os.path.join(staging, "img", "root"), emit, unpack_child)

    try:
        # all missing layers download and unpack side by side; nothing is published
        # until every one of them is verified, so a bad blob leaves the store as it was
        async with trio.open_nursery() as nursery:
            for i in range(len(layers)):
                if ids[i] is None:
                    nursery.start_soon(one, i)
        for i, key in enumerate(keys):
            if ids[i] is None:
                parent = ids[i - 1] if i else 0
                assert parent is not None
                ids[i] = store.lookup_key(key) or store.publish(os.path.join(stagings[i], "img"), parent, None, key)
    finally:
        with trio.CancelScope(shield=True):
            for staging in stagings.values():
                await discard(staging)
    top = ids[-1] if ids else 0
    assert top is not None
    return top


def _verified(url: str, desc: dict) -> http.Verified:
    d = desc.get("digest", "")
    if not d.startswith("sha256:"):
        raise PlashError(f"{url}: unsupported digest {d!r} (only sha256)")
    return http.Verified(url, d[len("sha256:"):], desc.get("size"))


async def _fetch_layer(blobs: RegistryBlobs | FileBlobs, layer: dict, root: str, emit: Emit,
                       unpack_child: Callable[..., Awaitable[None]]) -> None:
    """Stream one layer blob into an OCI unpacker, checking its digest and size on the way."""
    from plash.engine.jobs import send_or_drop  # the jobs<->docker cycle goes with the architecture issue

    label = blobs.label(layer)
    emit(Event("download-start", label, 0, layer.get("size")))
    r, w = os.pipe()
    done = 0
    async with trio.open_nursery() as nursery:
        async def unpacker() -> None:
            try:
                await unpack_child(root, r, label, oci=True)
            finally:
                os.close(r)

        nursery.start_soon(unpacker)
        out = trio.lowlevel.FdStream(w)
        ended: list[bool] = []
        try:
            async def sink(chunk: bytes) -> None:
                # an unpacker that fails cancels this download through the nursery; one
                # that is done early (the end of the archive) lets it finish, verified
                await send_or_drop(out, chunk, ended)

            def progress(n: int, total: int | None) -> None:
                nonlocal done
                done = n
                emit(Event("download-progress", label, n, total))

            await blobs.fetch(layer, sink, progress)
        finally:
            await out.aclose()
    emit(Event("download-done", label, done, done))
