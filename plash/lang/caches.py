"""Caches that build steps share across builds, as macros and hints: --cache-mount, and the package managers'.

A cache is a directory of the store ($PLASH_DATA/cache/NAME) bound at a
path for the step of one layer. It is never part of the layer, nor of its
key: the hints that ask for one are left out of the key's text (plan.py),
so a build with caches and one without (`--no-package-cache`) make the
same keys, and old layers keep theirs.

    ### plash hint: cache-mount=NAME:PATH      bind cache NAME at PATH (--cache-mount)
    ### plash hint: package-cache=PM           the lines up to the end hint are PM's (--apt ...):
    ### plash hint: package-cache-end=PM       with package caches on, PM's cache is bound and used there

How each package manager is pointed at its cache (facts of each tool):
- apt: Debian's docker images ship /etc/apt/apt.conf.d/docker-clean, whose
  hooks delete /var/cache/apt/archives/*.deb after every install; the cache
  is bound elsewhere and apt-get told so (Dir::Cache::Archives), so the
  hooks run as the image wants and miss it. apt-get keeps downloads anyway;
  Keep-Downloaded-Packages says so for images that turn that off.
- apk: a directory at /etc/apk/cache is apk's cache of packages and
  indexes; the indexes are copied to /var/cache/apk afterwards, where apk
  looks without the cache, so later steps find them as they would.
- dnf, yum: the cache dir itself (/var/cache/dnf; dnf5's /var/cache/libdnf5)
  is bound, and keepcache keeps the packages there.
- pacman: /var/cache/pacman/pkg is bound; pacman keeps packages by default.
- pip, npm: their cache would be the home of the build's root, which is the
  host's (build steps share /root and /home): --cache-dir and --cache point
  them at the plash cache instead.
"""

from __future__ import annotations

from plash import config
from plash.errors import MacroError
from plash.lang.expand import HINT, PACKAGE_MANAGERS, hint, macro

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.lang.expand import Context
    from plash.lang.tokens import Call

CACHE_MOUNT = "cache-mount"
PACKAGE_CACHE = "package-cache"
PACKAGE_CACHE_END = "package-cache-end"
KEYLESS_HINTS = frozenset((CACHE_MOUNT, PACKAGE_CACHE, PACKAGE_CACHE_END))  # not part of a layer's key

# where the package managers' caches are bound when the tool is told the path (not its own default)
PLASH_CACHES = "/var/cache/plash"


class Mount:
    """A cache bound for one step: the store's cache NAME at PATH inside, with subdirs the tool expects."""

    __slots__ = ("name", "path", "subdirs")

    def __init__(self, name: str, path: str, subdirs: tuple[str, ...] = ()) -> None:
        self.name, self.path, self.subdirs = name, path, subdirs

    def __repr__(self) -> str:
        return f"Mount({self.name!r}, {self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mount) and (self.name, self.path) == (other.name, other.path)

    def __hash__(self) -> int:
        return hash((self.name, self.path))


class PackageCache:
    """How one package manager's lines use its cache: the mounts, options for its commands, lines after them.

    The lines are the macro's own (PACKAGE_MANAGERS; a defpm'd one gets no
    cache), so a line that runs one of commands gets options after the
    command's name; the user's own lines (a `--run apt-get clean`) are left
    alone. (Not a shell function: dash refuses the name apt-get.)
    """

    __slots__ = ("after", "before", "commands", "mounts", "options")

    def __init__(self, mounts: tuple[Mount, ...], commands: tuple[str, ...] = (), options: str = "",
                 before: tuple[str, ...] = (), after: tuple[str, ...] = ()) -> None:
        self.mounts, self.commands, self.options = mounts, commands, options
        self.before, self.after = before, after

    def rewrite(self, line: str) -> str:
        for c in self.commands:
            if line == c or line.startswith(c + " "):
                return f"{c} {self.options}{line[len(c):]}"
        return line




def _copy_newer(src: str, dst: str) -> str:
    """A shell line copying src's files (not apt's lock) into dst where missing or older, times kept."""
    return (f'for f in {src}/*; do t={dst}/${{f##*/}}; [ ! -f "$f" ] || [ "${{f##*/}}" = lock ] || '
            f'{{ [ -e "$t" ] && ! [ "$f" -nt "$t" ]; }} || cp -p "$f" "$t"; done')


_APT = PackageCache(
    (Mount("apt", f"{PLASH_CACHES}/apt", ("partial",)), Mount("apt-lists", f"{PLASH_CACHES}/apt-lists")),
    ("apt-get",), f"-o Dir::Cache::Archives={PLASH_CACHES}/apt/ -o APT::Keep-Downloaded-Packages=true",
    before=(_copy_newer(f"{PLASH_CACHES}/apt-lists", "/var/lib/apt/lists"),),
    after=(_copy_newer("/var/lib/apt/lists", f"{PLASH_CACHES}/apt-lists"),))
_DNF_MOUNTS = (Mount("dnf", "/var/cache/dnf"), Mount("dnf5", "/var/cache/libdnf5"))
RECIPES: dict[str, PackageCache] = {
    "apt": _APT,
    "add-apt-repository": _APT,
    "apk": PackageCache((Mount("apk", "/etc/apk/cache"),), after=(
        'mkdir -p /var/cache/apk && for f in /etc/apk/cache/APKINDEX.*.tar.gz; do [ ! -e "$f" ] || '
        'cp -p "$f" /var/cache/apk/; done',)),
    "dnf": PackageCache(_DNF_MOUNTS, ("dnf",), "--setopt=keepcache=1"),
    "yum": PackageCache(_DNF_MOUNTS, ("yum",), "--setopt=keepcache=1"),
    "pacman": PackageCache((Mount("pacman", "/var/cache/pacman/pkg"),)),
    "pip": PackageCache((Mount("pip", f"{PLASH_CACHES}/pip"),), ("pip",), f"--cache-dir={PLASH_CACHES}/pip"),
    "pip3": PackageCache((Mount("pip", f"{PLASH_CACHES}/pip"),), ("pip3",), f"--cache-dir={PLASH_CACHES}/pip"),
    "npm": PackageCache((Mount("npm", f"{PLASH_CACHES}/npm"),), ("npm",), f"--cache={PLASH_CACHES}/npm"),
}


def install(ctx: Context, call: Call) -> list[str]:
    """A package manager macro's lines, between the hints of its cache (unless defpm redefined it)."""
    lines = ctx.install(call)
    if not lines or call.name not in RECIPES or ctx.pms.get(call.name) != PACKAGE_MANAGERS.get(call.name):
        return lines
    return [hint(PACKAGE_CACHE, call.name), *lines, hint(PACKAGE_CACHE_END, call.name)]


def mount_problem(path: str) -> str | None:
    """Why a cache cannot be bound at path inside the image (None: it can)."""
    if not path.startswith("/"):
        return f"the path {path!r} is not absolute"
    parts = path.split("/")
    if ".." in parts or "." in parts:
        return f"the path {path!r} has '.' or '..' in it"
    if path.rstrip("/") == "":
        return "the path is the image's root"
    clean = "/" + "/".join(p for p in parts if p)
    for shared in config.BUILD_BINDS:
        if clean == shared or clean.startswith(shared + "/"):
            return f"the path {clean} is in the host's {shared}, which build steps share: bind caches in the image"
    return None


@macro(CACHE_MOUNT, "bind the store's cache NAME (made on demand; not in the layer or its key) at PATH for the "
       "steps of this layer: NAME:PATH...", "cache", 1)
def _cache_mount(ctx: Context, call: Call) -> list[str]:
    from plash.store.caches import name_problem  # the store's rule; off the start path of plash executables

    out = []
    for arg in call.args:
        name, sep, path = arg.partition(":")
        problem = "it is not NAME:PATH" if not sep else name_problem(name) or mount_problem(path)
        if problem:
            raise MacroError(call.where, f"--cache-mount {arg!r}: {problem}",
                             hint="e.g. --cache-mount gomod:/go/pkg/mod (NAME: letters, digits, '.', '_' and '-')")
        out.append(hint(CACHE_MOUNT, f"{name}:/{'/'.join(p for p in path.split('/') if p)}"))
    return out


def hint_of(line: str) -> tuple[str, str] | None:
    """(name, value) of a cache hint line, else None."""
    if not line.startswith(HINT):
        return None
    name, _, value = line[len(HINT):].partition("=")
    return (name, value) if name in KEYLESS_HINTS else None


def key_text(text: str) -> str:
    """A layer's text as its key sees it: without the cache hints."""
    return "\n".join(line for line in text.split("\n") if hint_of(line) is None)


def step_shell(text: str, package_cache: bool) -> tuple[str, list[Mount]]:
    """The shell a layer's step runs, and the caches bound for it (sorted by path, so parents come first).

    Raises ValueError when two caches would be bound at one path.
    """
    lines: list[str] = []
    mounts: dict[str, Mount] = {}
    recipe: PackageCache | None = None  # the package manager whose lines these are

    def add(m: Mount) -> None:
        if mounts.setdefault(m.path, m).name != m.name:
            raise ValueError(f"two caches at {m.path}: {mounts[m.path].name} and {m.name}")

    for line in text.split("\n"):
        if line.startswith(HINT):
            found = hint_of(line)
            if found is None:
                continue
            name, value = found
            if name == CACHE_MOUNT:
                cache, _, path = value.partition(":")
                add(Mount(cache, path))
            elif name == PACKAGE_CACHE and package_cache and value in RECIPES:
                recipe = RECIPES[value]
                for m in recipe.mounts:
                    add(m)
                lines += recipe.before
            elif name == PACKAGE_CACHE_END and recipe is not None:
                lines += recipe.after
                recipe = None
            continue
        lines.append(recipe.rewrite(line) if recipe else line)
    return "\n".join(lines), sorted(mounts.values(), key=lambda m: m.path)
