"""Settings read from the environment: where the store is, what to export."""

from __future__ import annotations

import os

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Host variables every container receives (SPEC 5, "Environment").
PASSED_ENV = ("TERM", "DISPLAY", "XAUTHORITY", "HOME", "PLASH_DATA")

# Host paths bound into every container; /tmp only at run time, not in builds.
RUN_BINDS = ("/home", "/root", "/tmp", "/dev", "/proc", "/sys", "/etc/resolv.conf")
BUILD_BINDS = tuple(p for p in RUN_BINDS if p != "/tmp")

# Top-level dirs that make up an image: a $HOME there is never bound over them.
_SYSTEM_DIRS = frozenset(("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
                          "/run", "/sbin", "/sys", "/usr", "/var", "/opt", "/srv", "/mnt", "/media", "/tmp"))


def home_binds(binds: tuple[str, ...], home: str | None = None) -> list[tuple[str, str]]:
    """Binds for the caller's home when it lies outside the shared dirs (CI users, service accounts).

    /home and /root are shared anyway; a home elsewhere (/var/lib/jenkins) is
    bound at its real path, where os.getcwd() names it, and at $HOME's own
    spelling when that is a symlink to it.
    """
    home = os.environ.get("HOME", "") if home is None else home
    if not home.startswith("/"):
        return []
    real = os.path.realpath(home)
    out: list[tuple[str, str]] = []
    for dst in dict.fromkeys((real, os.path.normpath(home))):
        if dst in _SYSTEM_DIRS or any(dst == b or dst.startswith(b + "/") for b in binds):
            continue  # shared already, or a system dir that must stay the image's
        out.append((real, dst))
    return out


def data_dir() -> str:
    """The store's path: $PLASH_DATA, else ~/.plashdata (absolute, not resolved)."""
    path = os.environ.get("PLASH_DATA") or os.path.join(
        os.path.expanduser("~"), ".plashdata"
    )
    return os.path.abspath(path)


def exported_names() -> list[str]:
    """Names listed in PLASH_EXPORT (colon separated)."""
    return [n for n in os.environ.get("PLASH_EXPORT", "").split(":") if n]


def debug() -> bool:
    return os.environ.get("PLASH_DEBUG", "") not in ("", "0")


# The Debian mirror of --from-debootstrap (PLASH_DEBIAN_MIRROR overrides it).
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def default_mirror() -> str:
    return os.environ.get("PLASH_DEBIAN_MIRROR", DEFAULT_MIRROR)


def limits(steps: int = 2) -> dict[str, int]:
    """How many jobs of each kind one plash process runs at once.

    import: base images being imported; step: build steps (warm -j);
    download: blob and tarball downloads of all imports together
    (PLASH_DOWNLOADS, default 4).
    """
    text = os.environ.get("PLASH_DOWNLOADS", "").strip()
    downloads = int(text) if text.isdigit() and int(text) > 0 else 4
    return {"import": 4, "step": max(1, steps), "download": downloads}


class BuildOptions:
    """The options of build, b and the -X form, given before the macros (`plash build --quiet --cache-from R ...`).

    cache_from/cache_to: layer cache repositories (plash.engine.cache); from
    the command line, else from PLASH_CACHE_FROM / PLASH_CACHE_TO (several
    separated by commas or spaces). no_cache: build every layer again (the
    new layers replace the cached ones under their keys); pull: look again
    at the base image's source and import it when it changed. progress:
    auto, tty, plain or json (None: $PLASH_PROGRESS, else auto).
    package_cache: package managers keep their downloads in the store's
    caches (--no-package-cache: not); like the others, it changes no key.
    """

    __slots__ = ("cache_from", "cache_to", "no_cache", "package_cache", "progress", "pull", "quiet")

    def __init__(self, quiet: bool = False, cache_from: list[str] | None = None,
                 cache_to: list[str] | None = None, no_cache: bool = False, pull: bool = False,
                 progress: str | None = None, package_cache: bool = True) -> None:
        self.quiet, self.no_cache, self.pull, self.progress = quiet, no_cache, pull, progress
        self.package_cache = package_cache
        self.cache_from = cache_from if cache_from is not None else _env_list("PLASH_CACHE_FROM")
        self.cache_to = cache_to if cache_to is not None else _env_list("PLASH_CACHE_TO")


def _env_list(name: str) -> list[str]:
    return os.environ.get(name, "").replace(",", " ").split()


BUILD_FLAGS = ("--quiet", "-q", "--no-cache", "--pull", "--no-package-cache")
BUILD_LISTS = ("--cache-from", "--cache-to")
QUIET = ("--quiet", "-q")  # accepted among the macros too: no macro is called q, nor takes "-q" as a word
PROGRESS_MODES = ("auto", "tty", "plain", "json")


def split_build_options(args: list[str]) -> tuple[BuildOptions, list[str]]:
    """The leading options of a build's words, and the macros after them.

    PlashError for an option without value, and for a build option among
    the macros (they come first: `plash build --no-cache --from ...`).
    """
    flags, lists = set[str](), {name: list[str]() for name in BUILD_LISTS}
    progress: str | None = None
    while args:
        word = args[0]
        name, eq, value = word.partition("=")
        if name == "--progress":
            chosen = value if eq else (args[1] if len(args) > 1 else "")
            if chosen not in PROGRESS_MODES:
                from plash.errors import PlashError

                raise PlashError(f"--progress is one of {', '.join(PROGRESS_MODES)}, got {chosen!r}")
            progress, args = chosen, args[1 if eq else 2:]
        elif word in BUILD_FLAGS:
            flags.add(word)
            args = args[1:]
        elif name in lists and eq:
            lists[name].append(value)
            args = args[1:]
        elif word in lists:
            if len(args) < 2 or not args[1] or args[1].startswith("-"):
                from plash.errors import UsageError

                raise UsageError(f"{word} needs a repository", f"{word} REGISTRY/NAME")
            lists[word].append(args[1])
            args = args[2:]
        else:
            break
    if any(word in QUIET for word in args):
        flags.add("--quiet")
        args = [word for word in args if word not in QUIET]
    for word in args:
        name = word.partition("=")[0]
        if word in BUILD_FLAGS or name in (*BUILD_LISTS, "--progress"):
            from plash.errors import PlashError

            raise PlashError(f"{name} is an option of the build, not a macro: give it first, "
                             f"before the macros (plash build {name} --from ...)")
    return BuildOptions("--quiet" in flags or "-q" in flags, lists["--cache-from"] or None,
                        lists["--cache-to"] or None, "--no-cache" in flags, "--pull" in flags, progress,
                        "--no-package-cache" not in flags), args
