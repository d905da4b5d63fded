"""Builds, the layer cache, build files and plash executables, for each kind of user."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from conftest import PLASH, Plash
from procs import Exits, own_pid, wait_for_descendant


def build(plash: Plash, *macros: str, **kw) -> subprocess.CompletedProcess:
    return plash("build", *macros, **kw)


def images(plash: Plash) -> int:
    return len(os.listdir(plash.store / "index"))


def test_build_prints_the_id_and_caches_silently(plash: Plash, busybox_tgz: Path) -> None:
    macros = ["--from-tarball", str(busybox_tgz), "--run", "echo one > /one", "--layer", "--run", "echo built-two"]
    r = build(plash, *macros)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().isdigit()
    assert "built-two" in r.stderr
    assert "+ echo one" in r.stderr
    again = build(plash, *macros)
    assert (again.returncode, again.stdout, again.stderr) == (0, r.stdout, "")
    assert plash.ok("run", r.stdout.strip(), "cat", "/one") == "one"


def test_changed_layer_rebuilds_it_and_later_ones_only(plash: Plash, image: str) -> None:
    def b(first: str, second: str, third: str) -> subprocess.CompletedProcess:
        return build(plash, "--from", image, "--run", f"echo {first}", "--layer", "--run", f"echo {second}",
                     "--layer", "--run", f"echo {third}")

    first = b("a", "b", "c")
    n = images(plash)
    second = b("a", "B", "c")
    assert second.returncode == 0
    assert "+ echo a" not in second.stderr
    assert "+ echo B" in second.stderr
    assert "+ echo c" in second.stderr
    assert images(plash) == n + 2
    assert second.stdout != first.stdout
    assert b("a", "b", "c").stdout == first.stdout  # the old chain is still cached


def test_layer_keys_do_not_depend_on_ids(plash: Plash, busybox_tgz: Path) -> None:
    macros = ["--from-tarball", str(busybox_tgz), "--run", "true"]
    first = plash.ok("build", *macros)
    plash.import_tar(busybox_tgz)  # shift the numbering
    plash.ok("rm", first)
    rebuilt = plash.ok("build", *macros)
    assert rebuilt != first
    assert plash.ok("build", *macros) == rebuilt


def test_invalidate_layer(plash: Plash, image: str) -> None:
    macros = ["--from", image, "--run", "echo stable", "--layer", "--invalidate-layer", "--run", "echo again"]
    a = build(plash, *macros)
    b = build(plash, *macros)
    assert "+ echo again" in b.stderr
    assert "+ echo stable" not in b.stderr
    assert a.stdout != b.stdout


def test_hash_path(plash: Plash, image: str) -> None:
    data = plash.work / "data"
    plash.sh(["sh", "-c", f"mkdir {data} && echo 1 > {data}/f"])
    macros = ["--from", image, "--hash-path", str(data), "--run", "echo hashed"]
    first = plash.ok("build", *macros)
    os.utime(data / "f", (1, 1))
    assert build(plash, *macros).stderr == ""  # mtime alone does not matter
    plash.sh(["sh", "-c", f"echo 2 > {data}/f"])
    r = build(plash, *macros)
    assert "+ echo hashed" in r.stderr
    assert r.stdout.strip() != first
    assert ": plash hash-path " in plash.ok("eval", *macros)


def test_failing_step(plash: Plash, image: str) -> None:
    before = plash.snapshot()
    r = build(plash, "--from", image, "--run", "echo partial > /p", "--layer", "--run", "echo out; exit 3")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.splitlines()[-1] == "plash error: build failed at argument 6 (exit 3)"
    after = plash.snapshot()
    assert len([p for p, _ in after if p.startswith("index/")]) == len([p for p, _ in before if p.startswith("index/")]) + 1
    assert os.listdir(plash.store / "tmp") == []


def test_build_file_errors(plash: Plash, image: str) -> None:
    f = plash.work / "bad.plash"
    cases = {
        f"--from {image}\n--aptt x\n": f"plash error: {f}:2: unknown macro 'aptt' (did you mean 'apt'?)",
        f"lonely\n--from {image}\n": f"plash error: {f}:1: argument 'lonely' before any macro",
    }
    for text, error in cases.items():
        plash.sh(["sh", "-c", f"cat > {f}"], input=text)
        before = plash.snapshot()
        r = plash("build", "--eval-file", str(f))
        assert r.returncode == 1
        assert r.stderr.splitlines()[0] == error
        r = plash(str(f))
        assert r.returncode == 1
        assert r.stderr.splitlines()[0] == error
        assert plash.snapshot() == before
    r = plash("build", "--eval-file", str(plash.work / "missing"))
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == f"plash error: argument 1: cannot read build file {plash.work}/missing: No such file or directory"
    if plash.user != "root":
        unreadable = plash.work / "unreadable"
        unreadable.write_text("--run\ntrue\n")
        unreadable.chmod(0o600)  # owned by root: the test user cannot read it
        r = plash("build", "--eval-file", str(unreadable))
        assert r.returncode == 1
        assert r.stderr.splitlines()[0] == f"plash error: argument 1: cannot read build file {unreadable}: Permission denied"


def executable(plash: Plash, name: str, text: str) -> Path:
    path = plash.work / name
    plash.sh(["sh", "-c", f"cat > {path} && chmod 755 {path}"], input="#!/usr/bin/env plash\n" + text)
    return path


def env_with_plash(plash: Plash) -> dict[str, str]:
    return {"PATH": f"{Path(PLASH).parent}:/usr/bin:/bin"}


def test_executable(plash: Plash, busybox_tgz: Path) -> None:
    sub = plash.work / "tree"
    plash.sh(["mkdir", "-p", str(sub)])
    plash.sh(["cp", str(busybox_tgz), str(sub / "rootfs.tgz")])
    exe = executable(plash, "tree/tool", "--from-tarball rootfs.tgz\n--run\necho built-once\n"
                     "--entrypoint-script\necho \"args:$*\"\npwd\ncat\nexit 5\n")
    env = env_with_plash(plash)
    r = plash.sh([str(exe), "a b", "c"], input="from stdin\n", env=env, cwd=plash.work)
    assert r.returncode == 5, r.stderr
    assert r.stdout == f"args:a b c\n{plash.work}\nfrom stdin\n"
    assert "built-once" in r.stderr
    r = plash.sh([str(exe)], input="", env=env, cwd=plash.work)
    assert (r.returncode, r.stderr) == (5, "")  # warm: nothing on stderr


def test_executable_settings_apply_at_run_time(plash: Plash, image: str) -> None:
    shared = plash.work / "shared"
    plash.sh(["sh", "-c", f"mkdir {shared} && echo mounted > {shared}/f"])
    exe = executable(plash, "settings", f"--from {image}\n--env MYVAR\n--env-prefix MYP_\n--mount {shared}:/opt/m\n"
                     "--entrypoint sh -c\n")
    env = env_with_plash(plash) | {"MYVAR": "v", "MYP_ONE": "1", "OTHER": "no"}
    out = plash.sh([str(exe), "echo $MYVAR $MYP_ONE ${OTHER:-unset}; cat /opt/m/f"], env=env).stdout
    assert out == "v 1 unset\nmounted\n"


def test_executable_without_entrypoint(plash: Plash, image: str) -> None:
    exe = executable(plash, "noentry", f"--from {image}\n--run\ntrue\n")
    r = plash.sh([str(exe)], env=env_with_plash(plash))
    assert r.returncode == 1
    assert r.stderr.splitlines()[-2] == f"plash error: {exe}: no entrypoint"


def test_build_and_run_forms(plash: Plash, image: str) -> None:
    assert plash.ok("--from", image, "--run", "echo x > /x", "--", "cat", "/x") == "x"
    assert plash.ok("-f", image, "-x", "echo y > /y", "--", "cat", "/y") == "y"
    assert plash.ok("b", "run", "--from", image, "--", "echo", "b-form") == "b-form"
    built = plash.ok("build", "--from", image, "--run", "echo x > /x")
    assert plash.ok("b", "parent", "--from", image, "--run", "echo x > /x") == image
    assert plash.ok("b", "nodepath", "--from", image, "--run", "echo x > /x").endswith(f"/{built}")
    r = plash("-f", image, "--", "sh", "-c", "exit 4")
    assert r.returncode == 4


def test_eval_and_help_macros(plash: Plash) -> None:
    assert plash.ok("eval", "--from", "3", "--apt", "a") == (
        "### plash hint: image=id 3\n### plash hint: package-cache=apt\napt-get update\napt-get install -y a\n"
        "### plash hint: package-cache-end=apt")
    listing = plash.ok("--help-macros")
    assert listing == plash.ok("help-macros")
    for name in ("--from-debootstrap", "--write-file", "--hash-path", "-A"):
        assert name in listing


def test_unreachable_sources_give_one_error_line(plash: Plash) -> None:
    plash.ok("init")
    before = plash.snapshot()
    env = {"PLASH_LXC_URL": "http://127.0.0.1:9", "PLASH_HTTP_TIMEOUT": "2"}
    for macro, arg in (("--from-lxc", "alpine:edge"), ("--from-docker", "127.0.0.1:9/alpine"),
                       ("--from-url", "http://127.0.0.1:9/x.tar")):
        r = build(plash, macro, arg, env=env)
        assert r.returncode == 1
        errors = [line for line in r.stderr.splitlines() if line.startswith("plash error:")]
        assert len(errors) == 1, r.stderr
        assert "127.0.0.1:9" in errors[0], r.stderr
        # in words, never as [Errno 111] or <urlopen error ...>; no hint that cannot help
        assert errors[0].startswith("plash error: cannot reach 127.0.0.1:9: connection refused"), r.stderr
        assert "Errno" not in r.stderr and "hint:" not in r.stderr, r.stderr
    assert plash.snapshot() == before


def test_a_name_that_does_not_resolve_is_said_in_words(plash: Plash) -> None:
    plash.ok("init")
    r = build(plash, "--from-docker", "plash-test.invalid/alpine:edge")  # .invalid never resolves (RFC 2606)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("plash error:")]
    assert len(errors) == 1, r.stderr
    assert errors[0].startswith("plash error: cannot reach plash-test.invalid: name not resolved"), r.stderr
    assert "Errno" not in r.stderr and "hint:" not in r.stderr


def test_ctrl_c_stops_the_build_and_leaves_nothing(plash: Plash, image: str) -> None:
    proc = subprocess.Popen(plash.command([PLASH, "build", "--from", image, "--run", "touch /started; sleep 300"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=plash.work)
    # this build's own step (in its process tree), not any `sleep 300` of the machine
    step = wait_for_descendant(proc.pid, lambda argv: argv == ["sleep", "300"])
    with Exits([step]) as exits:
        # Ctrl-C reaches the whole foreground process group; plash itself is what must react
        os.kill(own_pid(proc), signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert err.splitlines()[-1] == "plash error: interrupted", err
        assert out == ""
        assert exits.running() == [], "the build step outlived plash"
    assert os.listdir(plash.store / "tmp") == []
    assert len(os.listdir(plash.store / "index")) == 2


def test_warm_executable_does_not_start_trio(plash: Plash, image: str) -> None:
    exe = executable(plash, "light", f"--from {image}\n--run\ntrue\n--entrypoint true\n")
    plash.ok(str(exe))
    python = str(Path(PLASH).parent / "python")
    r = plash.sh([python, "-X", "importtime", "-m", "plash", str(exe)])
    assert r.returncode == 0
    modules = {line.split("|")[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "|" in line}
    assert "plash" in modules
    assert not modules & {"trio", "rich", "httpx", "click", "anyio"}


def test_b_with_an_unknown_command_fails_before_building(plash: Plash, image: str) -> None:
    n = images(plash)
    r = plash("b", "bild", "--from", image, "--run", "echo should-not-run")
    assert r.returncode == 1
    assert r.stderr == "plash error: no such command: bild\nhint: did you mean 'build'?\n"
    assert images(plash) == n


def test_a_layer_of_megabytes_of_shell_text(plash: Plash, image: str) -> None:
    """More than the kernel's 128 KiB for one argument: the step's script does not travel in argv."""
    lines = [f"echo line-{i:06d}-{'x' * 40} >> /big" for i in range(8000)]  # about 450 KiB
    path = plash.work / "big.plash"
    plash.sh(["sh", "-c", f"cat > {path}"], input="\n".join(["--from", image, "--run", *lines]) + "\n")
    r = plash("build", "--quiet", "--eval-file", str(path))
    assert r.returncode == 0, r.stderr[-2000:]
    out = plash.ok("run", r.stdout.strip(), "sh", "-c", "wc -l < /big; tail -n 1 /big")
    assert out.split() == ["8000", f"line-007999-{'x' * 40}"]
