"""A plash executable run again is answered from its memo (plash.store.execmemo), and never wrongly.

The memo must give exactly what expanding and planning the file would: each
test changes one thing the answer depends on (the file, a layer's key, the
image, the file's place, the host's environment) and checks the run sees it.
PLASH_TEST_MEMO_SETTLE_NS=0 lets a file be remembered as soon as it is
written (the default waits 2 s; test_a_fresh_file_is_not_remembered).
"""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import PLASH, Plash

NOW = {"PLASH_TEST_MEMO_SETTLE_NS": "0"}


def write(plash: Plash, path: Path, text: str) -> None:
    r = plash.sh(["sh", "-c", f"mkdir -p {path.parent} && cat > {path} && chmod 755 {path}"], input=text)
    assert r.returncode == 0, r.stderr


def run(plash: Plash, exe: Path, *args: str, env: dict[str, str] | None = None) -> str:
    r = plash.sh([PLASH, str(exe), *args], env={**NOW, **(env or {})})
    assert r.returncode == 0, r.stderr
    return r.stdout


def memos(plash: Plash) -> list[str]:
    d = plash.store / "memo"
    r = plash.sh(["sh", "-c", f"ls -A {d} 2>/dev/null || true"])
    return r.stdout.split()


def test_the_second_run_is_answered_without_the_macro_language(plash: Plash, image: str) -> None:
    exe = plash.work / "tool"
    write(plash, exe, f"#!/usr/bin/env plash\n--from {image}\n--run\necho built > /b\n--entrypoint cat /b\n")
    assert run(plash, exe) == "built\n"
    assert len(memos(plash)) == 1
    r = plash.sh([sys.executable, "-X", "importtime", PLASH, str(exe)], env=NOW)
    assert (r.returncode, r.stdout) == (0, "built\n"), r.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "plash.store.execmemo" in imported
    assert not {"plash.lang.macros", "plash.engine.plan", "plash.engine.build"} & imported


def test_an_edited_file_is_built_again_even_at_the_same_size(plash: Plash, image: str) -> None:
    exe = plash.work / "tool"
    write(plash, exe, f"--from {image}\n--run\necho aaa > /b\n--entrypoint cat /b\n")
    assert run(plash, exe) == "aaa\n"
    write(plash, exe, f"--from {image}\n--run\necho bbb > /b\n--entrypoint cat /b\n")
    assert run(plash, exe) == "bbb\n"
    assert run(plash, exe) == "bbb\n"


def test_a_layer_made_again_under_its_key_is_the_one_run(plash: Plash, image: str) -> None:
    step = "cat /proc/sys/kernel/random/uuid > /id"
    exe = plash.work / "tool"
    write(plash, exe, f"--from {image}\n--run\n{step}\n--entrypoint cat /id\n")
    first = run(plash, exe)
    assert run(plash, exe) == first
    # the same layer made again (as --no-cache or a new base does): its key now names another image
    again = plash.ok("build", "--no-cache", "--from", image, "--run", step, "--entrypoint", "cat", "/id")
    now = run(plash, exe)
    assert now != first
    assert now == plash.ok("run", again, "cat", "/id") + "\n"


def test_a_removed_image_is_built_again(plash: Plash, image: str) -> None:
    exe = plash.work / "tool"
    write(plash, exe, f"--from {image}\n--run\necho one > /b\n--entrypoint cat /b\n")
    assert run(plash, exe) == "one\n"
    built = plash.ok("build", "--from", image, "--run", "echo one > /b")
    plash.ok("rm", built)
    assert run(plash, exe) == "one\n"


def test_a_moved_file_is_expanded_where_it_is_now(plash: Plash, image: str) -> None:
    """Same inode, another directory: its relative paths mean other files."""
    for d, text in (("one", "first"), ("two", "second")):
        write(plash, plash.work / d / "data" / "f", f"{text}\n")
    exe = plash.work / "one" / "tool"
    write(plash, exe, f"--from {image}\n--mount ./data:/data\n--run\ntrue\n--entrypoint cat /data/f\n")
    assert run(plash, exe) == "first\n"
    plash.sh(["mv", str(exe), str(plash.work / "two" / "tool")])
    assert run(plash, plash.work / "two" / "tool") == "second\n"


def test_files_whose_expansion_reads_the_host_are_not_remembered(plash: Plash, image: str) -> None:
    write(plash, plash.work / "dep" / "req.txt", "x\n")
    write(plash, plash.work / "inc", "--run\ntrue\n")
    impure = {
        "import-env": "--import-env GREETING\n",
        "hash-path": "--hash-path dep\n",
        "eval-file": "--eval-file inc\n",
        "invalidate-layer": "--invalidate-layer\n",
    }
    for name, macro in impure.items():
        exe = plash.work / f"tool-{name}"
        write(plash, exe, f"--from {image}\n{macro}--run\necho \"[$GREETING]\" > /g\n--entrypoint cat /g\n")
        run(plash, exe, env={"GREETING": "hi"})
        run(plash, exe, env={"GREETING": "hi"})
    assert memos(plash) == []
    # and what they read is seen on every run
    exe = plash.work / "tool-import-env"
    assert run(plash, exe, env={"GREETING": "hello"}) == "[hello]\n"
    assert run(plash, exe, env={"GREETING": "bye"}) == "[bye]\n"


def test_a_fresh_file_is_not_remembered(plash: Plash, image: str) -> None:
    exe = plash.work / "tool"
    write(plash, exe, f"--from {image}\n--run\ntrue\n--entrypoint true\n")
    r = plash.sh([PLASH, str(exe)])  # the default: a file changed in the last 2 s may change again unseen
    assert r.returncode == 0, r.stderr
    assert memos(plash) == []


def test_a_broken_memo_is_ignored(plash: Plash, image: str) -> None:
    exe = plash.work / "tool"
    write(plash, exe, f"--from {image}\n--run\necho ok > /b\n--entrypoint cat /b\n")
    assert run(plash, exe) == "ok\n"
    (name,) = memos(plash)
    for junk in ("", "plash-memo 1\n", "garbage\n\n\n\n\n", "plash-memo 1\n/x\n1 2 3\n-\nnotanumber\n"):
        r = plash.sh(["sh", "-c", f"printf '%s' \"$1\" > {plash.store}/memo/{name}", "sh", junk])
        assert r.returncode == 0, r.stderr
        assert run(plash, exe) == "ok\n"


def test_a_command_line_built_again_is_answered_from_its_memo(plash: Plash, image: str) -> None:
    step = "cat /proc/sys/kernel/random/uuid > /id"
    first = plash.ok("build", "--from", image, "--run", step)
    assert [m for m in memos(plash) if m.startswith("argv-")]
    r = plash.sh([sys.executable, "-X", "importtime", PLASH, "build", "--from", image, "--run", step])
    assert (r.returncode, r.stdout.strip()) == (0, first), r.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert not {"plash.lang.macros", "plash.engine.plan"} & imported
    # made again under the same key: the memo follows the key, as the planner does
    again = plash.ok("build", "--no-cache", "--from", image, "--run", step)
    assert again != first
    assert plash.ok("build", "--from", image, "--run", step) == again
    # another directory: relative paths would mean other files, so it is planned there afresh
    (plash.work / "elsewhere").mkdir(exist_ok=True)
    assert plash.ok("build", "--from", image, "--run", step, cwd=plash.work / "elsewhere") == again
    plash.ok("rm", again)
    made = plash.ok("build", "--from", image, "--run", step)
    assert made not in (first, again)


def test_clean_drops_the_memos_that_can_never_answer_again(plash: Plash, image: str) -> None:
    files = {name: plash.work / name for name in ("keep", "deleted", "unbuilt")}
    for name, exe in files.items():
        write(plash, exe, f"--from {image}\n--run\necho {name} > /b\n--layer\n--entrypoint cat /b\n")
        assert run(plash, exe) == f"{name}\n"
    kept_line = plash.ok("build", "--from", image, "--run", "echo keep > /b")  # the same layer as keep's
    memo_of = {name: f"{exe.stat().st_dev}-{exe.stat().st_ino}" for name, exe in files.items()}
    argv_memos = [m for m in memos(plash) if m.startswith("argv-")]
    assert len(argv_memos) == 1
    plash.sh(["rm", str(files["deleted"])])
    plash.ok("rm", plash.ok("build", "--from", image, "--run", "echo unbuilt > /b"))  # unbuilt's lower layer
    (plash.work / "gone-dir").mkdir()
    plash.ok("build", "--from", image, "--run", "echo keep > /b", cwd=plash.work / "gone-dir")
    plash.sh(["rmdir", str(plash.work / "gone-dir")])
    r = plash.sh(["sh", "-c", f"echo half > {plash.store}/memo/.argv-0.999999999"])  # a writer killed midway
    assert r.returncode == 0, r.stderr
    assert len(memos(plash)) == 7  # three files, three command lines, the temp file
    r = plash.sh([PLASH, "clean"])
    assert r.returncode == 0, r.stderr
    assert "removed 5 stale build memo(s) (memo/)" in r.stderr, r.stderr
    assert sorted(memos(plash)) == sorted([memo_of["keep"], *argv_memos])
    assert run(plash, files["keep"]) == "keep\n"
    assert plash.ok("build", "--from", image, "--run", "echo keep > /b") == kept_line
    r = plash.sh([PLASH, "clean"])
    assert "memo" not in r.stderr, r.stderr
