"""`python -m plash.scripts`: make the installed `plash` and `plash-exec` start Python without `site`.

pip writes bin/plash and bin/plash-exec with a plain `#!/path/to/python`
line, so every start pays for the site module: the venv's pyvenv.cfg, its
.pth files and the modules they import (about 2 ms, a fifth of `python3 -c
pass`, which is what `plash run` is measured against). This rewrites the two
scripts in place to start `python -S` (a venv's base interpreter: see
interpreter()), and to put on sys.path the very
directories site added in this interpreter (its site-packages, and the
source tree of an editable install), so every import finds what it found
before. Run it again after each `pip install`; it changes nothing if the
scripts are already so.

README's install command runs it, and so does `.ci/run`: the tests run the
commands as written here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig

NAMES = ("plash", "plash-exec")
MARK = "import sys; sys.path.extend("  # the line this adds, after the #! line


def bare_path(python: str) -> list[str]:
    """python -S's sys.path, without its first entry (the script's directory)."""
    out = subprocess.run([python, "-S", "-c", "import json, sys; print(json.dumps(sys.path[1:]))"],
                         capture_output=True, text=True, check=True).stdout
    return list(json.loads(out))


def site_dirs(python: str) -> list[str]:
    """The sys.path entries site adds for python: this process's, minus those python -S has."""
    bare = set(bare_path(python))
    return [p for p in sys.path[1:] if p and p not in bare and os.path.isdir(p)]


def interpreter() -> str:
    """The python the scripts start: a venv's base interpreter when it has the same bare path.

    A venv's python reads pyvenv.cfg and works out its prefix at each start
    (half a millisecond); with -S and the site dirs on the path, the base
    interpreter imports exactly the same files.
    """
    base = getattr(sys, "_base_executable", "") or sys.executable
    if (base != sys.executable and os.path.isabs(base) and os.access(base, os.X_OK)
            and bare_path(base) == bare_path(sys.executable)):
        return base
    return sys.executable


def rewritten(text: str, dirs: list[str], python: str | None = None) -> str | None:
    """The script's new text, or None if its first line is not `#!/abs/python` (left as pip wrote it).

    python: the interpreter of the new first line (default: the one it names).
    """
    first, _, rest = text.partition("\n")
    words = first[2:].split()
    if not first.startswith("#!/") or not os.path.basename(words[0]).startswith("python") or words[1:] not in ([], ["-S"]):
        return None
    if rest.startswith(MARK):
        rest = rest.partition("\n")[2]
    return f"#!{python or words[0]} -S\n{MARK}{dirs!r})  # python -S: the directories site would add\n{rest}"


def rewrite(path: str, dirs: list[str], python: str | None = None) -> bool:
    """Rewrite one script in place (atomically, mode kept); False if it is not one this can change."""
    with open(path) as f:
        text = f.read()
    new = rewritten(text, dirs, python)
    if new is None:
        return False
    if new != text:
        tmp = f"{path}.plash-new"
        with open(tmp, "w") as f:
            f.write(new)
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    return True


def main() -> int:
    bindir = sysconfig.get_path("scripts")
    paths = [os.path.join(bindir, n) for n in NAMES]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        sys.stderr.write(f"plash error: no {missing[0]}: install plash with pip into this Python first\n")
        return 1
    dirs = site_dirs(sys.executable)
    python = interpreter()
    for p in paths:
        if not rewrite(p, dirs, python):
            sys.stderr.write(f"plash: {p} left as it is (its first line names no plain python path)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
