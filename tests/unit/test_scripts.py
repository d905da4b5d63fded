"""python -m plash.scripts: the installed commands start `python -S` and still import all they did."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from plash import scripts

PIP_STYLE = "#!/venv/bin/python3\n# plash's command\nimport sys\n\nfrom plash.__main__ import main\n\nsys.exit(main())\n"


def test_rewritten_adds_dash_s_and_the_path_line() -> None:
    new = scripts.rewritten(PIP_STYLE, ["/venv/lib/python3.11/site-packages"])
    assert new is not None
    first, second, rest = new.split("\n", 2)
    assert first == "#!/venv/bin/python3 -S"
    assert second.startswith("import sys; sys.path.extend(['/venv/lib/python3.11/site-packages'])")
    assert rest == PIP_STYLE.split("\n", 1)[1]
    # again, with other directories: the same script, one path line, the new directories
    again = scripts.rewritten(new, ["/other"])
    assert again is not None
    assert again.split("\n", 2)[2] == rest
    assert again.split("\n")[1].startswith("import sys; sys.path.extend(['/other'])")


def test_scripts_it_cannot_change_are_left_alone() -> None:
    # pip's form for an interpreter path with a space, and a shebang with other flags
    sh = "#!/bin/sh\n'''exec' \"/my venv/bin/python\" \"$0\" \"$@\"\n' '''\nimport sys\n"
    assert scripts.rewritten(sh, ["/x"]) is None
    assert scripts.rewritten("#!/venv/bin/python -E\nimport sys\n", ["/x"]) is None
    assert scripts.rewritten("import sys\n", ["/x"]) is None


def test_a_rewritten_script_runs_without_site_and_imports_plash_and_its_dependencies(tmp_path: Path) -> None:
    script = tmp_path / "tool"
    script.write_text(f"#!{sys.executable}\nimport sys, json\nimport plash, trio, click, rich, httpx\n"
                      "print(json.dumps([sys.flags.no_site, 'site' in sys.modules, plash.__file__]))\n")
    script.chmod(0o755)
    assert scripts.rewrite(str(script), scripts.site_dirs(sys.executable))
    assert script.read_text().startswith(f"#!{sys.executable} -S\n")
    mode = script.stat().st_mode
    r = subprocess.run([str(script)], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    no_site, site_loaded, where = json.loads(r.stdout)
    assert (no_site, site_loaded) == (1, False)
    import plash

    assert where == plash.__file__
    assert scripts.rewrite(str(script), scripts.site_dirs(sys.executable))  # idempotent
    assert script.stat().st_mode == mode
    assert script.read_text().count("sys.path.extend(") == 1


def test_the_installed_commands_start_without_site() -> None:
    """The venv the tests run (made by .ci/run, which runs plash.scripts as README's install does)."""
    for name in scripts.NAMES:
        first = (Path(sys.executable).parent / name).read_text().split("\n", 1)[0]
        assert first.endswith(" -S"), (name, first)


def test_a_venv_script_starts_the_base_interpreter_and_imports_the_same_files(tmp_path: Path) -> None:
    python = scripts.interpreter()
    if sys.prefix != sys.base_prefix:  # the tests run in a venv (.ci/run's): its python reads pyvenv.cfg
        assert python == getattr(sys, "_base_executable", sys.executable) != sys.executable
    script = tmp_path / "tool"
    script.write_text(f"#!{sys.executable}\nimport sys, json\nimport plash, trio, zlib_ng\n"
                      "print(json.dumps([sys.executable, plash.__file__, trio.__file__, zlib_ng.__file__]))\n")
    script.chmod(0o755)
    assert scripts.rewrite(str(script), scripts.site_dirs(sys.executable), python)
    assert script.read_text().startswith(f"#!{python} -S\n")
    r = subprocess.run([str(script)], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    import trio
    import zlib_ng

    import plash

    assert json.loads(r.stdout) == [python, plash.__file__, trio.__file__, zlib_ng.__file__]
