"""A build's remembered answer: the image a build file or command line gave, checked with a readlink per layer.

Running a plash executable (or `plash build`) whose layers are all built
used to mean expanding its macros and hashing every layer's key: the macro
language and the planner, milliseconds of imports on every start. After
such a build, `record` writes what the planner found into memo/DEV-INODE
(a build file) or memo/argv-CRC (a command line) of the store; `lookup`
gives that image again, without importing either, while all of these hold:

- the file is the same: same path, device, inode, size, mtime and ctime.
  A file changed less than SETTLE_NS before is not remembered, so a change
  within the file system's clock tick cannot go unseen. A command line:
  the same macro words, given in the same directory;
- plash's own expansion code is the same (the stats of the modules that
  expand macros and make keys: an upgrade may expand a file differently);
- the file uses only macros whose expansion depends on nothing but its
  text and directory (PURE_MACROS: not --eval-*, --hash-path,
  --import-env, --invalidate-layer, --from-tarball, --from-map, stdin, or
  oci:/docker-archive: sources);
- every key the planner looked up still names the same image (one readlink
  each, the checks of plash.engine.plan.cached_on: ids are never reused),
  and the image is still there.

Anything else gives None, and the caller expands and builds as before. A
memo that cannot be read or written is no error: it only costs the speed.
"""

from __future__ import annotations

import os
import time

from plash.errors import NoImage
from plash.store.layout import Store

VERSION = "plash-memo 2"
SETTLE_NS = 2_000_000_000
MEMO_DIR = "memo"

# Macros (by name, dashes stripped) whose expansion is a function of their words and the file's directory.
PURE_MACROS = frozenset((
    "from", "f", "from-id", "from-lxc", "from-url", "from-docker", "from-debootstrap",
    "run", "x", "inline", "layer", "l",
    "apt", "apk", "yum", "dnf", "pacman", "emerge", "pip", "pip3", "npm", "add-apt-repository",
    "write-file", "write-script", "cache-mount", "entrypoint", "entrypoint-script", "env", "env-prefix", "mount",
    "hint", "A", "D", "U", "F", "C", "R", "G",
))
# The modules that decide what a build file expands to and what its keys are.
CODE = ("lang/macros.py", "lang/expand.py", "lang/tokens.py", "lang/caches.py", "lang/hashpath.py", "engine/plan.py")


def _file_state(path: str) -> tuple[str, str]:
    """The memo's name for the file, and the state it must still have."""
    st = os.stat(path)
    return f"{st.st_dev}-{st.st_ino}", f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"


def _escaped(lines: list[str]) -> list[str]:
    """lines made one line each (words and paths may hold newlines)."""
    return [x.replace("\\", "\\\\").replace("\n", "\\n") for x in lines]


def for_file(path: str) -> tuple[str, list[str]]:
    """A build file's memo name and identity: its path and state (OSError if it cannot be looked at)."""
    name, state = _file_state(path)
    return name, _escaped([os.path.abspath(path), state])


def for_words(words: list[str], cwd: str) -> tuple[str, list[str]]:
    """A command line's memo name and identity: its macro words and the directory they were given in."""
    import binascii

    identity = _escaped([cwd, *words])
    return f"argv-{binascii.crc32(chr(0).join(identity).encode('utf-8', 'surrogateescape')):08x}", identity


def _code_state() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts = []
    for rel in CODE:
        try:
            st = os.stat(os.path.join(here, rel))
            parts.append(f"{st.st_size}.{st.st_mtime_ns}")
        except OSError:
            parts.append("-")
    return ",".join(parts)


def pure(words: list[str], known: frozenset[str] | set[str]) -> bool:
    """Whether a build file's words use only PURE_MACROS (of the known macro names) and no file-based source."""
    for w in words:
        if w.startswith(("oci:", "docker-archive:")):
            return False
        if w.startswith("-") and not w.startswith("---"):
            name = w.lstrip("-")
            if name in known and name not in PURE_MACROS:
                return False
    return True


class Snapshot:
    """A build file's identity, taken before it is read (record refuses if it changed meanwhile)."""

    __slots__ = ("path", "state", "taken")

    def __init__(self, path: str) -> None:
        self.path = path
        self.state = for_file(path)
        self.taken = time.time_ns()

    def settled(self) -> bool:
        """Unchanged since taken, and not changed in the last SETTLE_NS before it was."""
        try:
            if for_file(self.path) != self.state:
                return False  # changed while it was built
            st = os.stat(self.path)
        except OSError:
            return False
        settle = int(os.environ.get("PLASH_TEST_MEMO_SETTLE_NS", SETTLE_NS))  # tests: 0, rather than waiting
        # too fresh: a change in the same clock tick would keep this state
        return self.taken - max(st.st_mtime_ns, st.st_ctime_ns) >= settle


def _read(store: Store, name: str) -> tuple[list[str], int]:
    """A memo's identity lines and image, if its code state and keys still hold (ValueError if not)."""
    with open(os.path.join(store.path, MEMO_DIR, name), encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().split("\n")
    if lines[0] != VERSION:
        raise ValueError("another version")
    n = int(lines[1])
    if lines[n + 2] != _code_state():
        raise ValueError("other code")
    image = int(lines[n + 3])
    for line in lines[n + 4:]:
        if line:
            key, _, want = line.partition(" ")
            if os.path.basename(os.readlink(os.path.join(store.keys, key))) != want:
                raise ValueError("a key names another image")
    store.image_dir(image)
    return lines[2:n + 2], image


def lookup(store: Store, name: str, identity: list[str]) -> int | None:
    """The image recorded under name for identity, if every check above still holds; else None."""
    try:
        found, image = _read(store, name)
    except (OSError, ValueError, IndexError, NoImage):
        return None
    return image if found == identity else None


def prune(store: Store) -> int:
    """Delete the memos that can never answer again (plash clean); return how many.

    Those are: a memo of another version or plash code, one whose image or a key
    of it has changed, a build file's memo once the file is gone or changed, a
    command line's once its directory is gone, and the temp file of a writer
    that is gone.
    """
    memo = os.path.join(store.path, MEMO_DIR)
    try:
        names = os.listdir(memo)
    except OSError:
        return 0
    gone = 0
    for name in names:
        if name.startswith("."):  # .NAME.PID: a record's temp file
            stale = not _alive(name.rpartition(".")[2])
        else:
            try:
                identity, _ = _read(store, name)
                stale = not _still(name, identity)
            except (OSError, ValueError, IndexError, NoImage):
                stale = True
        if stale:
            try:
                os.unlink(os.path.join(memo, name))
                gone += 1
            except FileNotFoundError:
                pass
    return gone


def _still(name: str, identity: list[str]) -> bool:
    """Whether a memo's file (or a command line's directory) is still there as it was."""
    path = _unescaped(identity[0])
    if name.startswith("argv-"):
        return os.path.isdir(path)
    try:
        return for_file(path) == (name, identity)
    except OSError:
        return False


def _unescaped(x: str) -> str:
    """The line _escaped made of x, as it was."""
    out, i = [], 0
    while i < len(x):
        if x[i] == "\\" and i + 1 < len(x):
            out.append("\n" if x[i + 1] == "n" else x[i + 1])
            i += 2
        else:
            out.append(x[i])
            i += 1
    return "".join(out)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def record(store: Store, name: str, identity: list[str], image: int, keys: list[tuple[str, int]]) -> None:
    """Remember image under name for identity, valid while each (key, id) of keys still holds."""
    text = "\n".join([VERSION, str(len(identity)), *identity, _code_state(), str(image),
                      *(f"{k} {i}" for k, i in keys)]) + "\n"
    memo = os.path.join(store.path, MEMO_DIR)
    tmp = os.path.join(memo, f".{name}.{os.getpid()}")
    try:
        os.makedirs(memo, mode=0o700, exist_ok=True)
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
        os.replace(tmp, os.path.join(memo, name))
    except OSError:
        import contextlib  # here: not on the start path

        with contextlib.suppress(OSError):
            os.unlink(tmp)
