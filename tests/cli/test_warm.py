"""plash warm (many files, one DAG) and many plash processes building the same thing at once."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from conftest import PLASH, Plash
from procs import Exits, own_pid, wait_for_descendant


def write(plash: Plash, name: str, text: str) -> Path:
    path = plash.work / name
    plash.sh(["sh", "-c", f"cat > {path}"], input=text)
    return path


def test_warm_builds_shared_layers_once(plash: Plash, image: str) -> None:
    files = [write(plash, f"exe{i}", f"#!/usr/bin/env plash\n--from {image}\n--run\necho shared-layer\n--layer\n"
                   f"--run\necho own-{i}\n--entrypoint true\n") for i in range(10)]
    r = plash("warm", "-j", "4", *map(str, files))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [str(f) for f in files]
    assert len({line.split()[0] for line in lines}) == 10
    # echo writes its line at once; sh's trace may be split by concurrent steps' output
    out_lines = r.stderr.splitlines()
    # steps run side by side: each output line names its step ("[layer 1/2 (FILE:3)] shared-layer")
    assert [line.endswith("] shared-layer") for line in out_lines].count(True) == 1, out_lines
    assert all([line.endswith(f"] own-{i}") for line in out_lines].count(True) == 1 for i in range(10))
    again = plash("warm", *map(str, files))
    assert (again.stdout, again.stderr) == (r.stdout, "")


def test_warm_keep_going(plash: Plash, image: str) -> None:
    good = write(plash, "good", f"--from {image}\n--run\necho good\n")
    bad = write(plash, "bad", f"--from {image}\n--run\nexit 3\n")
    typo = write(plash, "typo", f"--from {image}\n--runn\n")
    r = plash("warm", "--keep-going", str(bad), str(good), str(typo))
    assert r.returncode == 1
    assert r.stdout.split(" ", 1)[1].strip() == str(good)
    errors = [line for line in r.stderr.splitlines() if line.startswith("plash error:")]
    assert errors[0] == f"plash error: build failed at {bad}:2 (exit 3)"
    assert errors[1].startswith(f"plash error: {typo}:2: unknown macro 'runn'")
    assert errors[2] == "plash error: 2 of 3 file(s) failed"
    r = plash("warm", str(bad), str(good))  # without --keep-going: the first failure stops all
    assert r.returncode == 1
    assert r.stdout == ""


def test_many_processes_build_the_same_file_once(plash: Plash, image: str) -> None:
    f = write(plash, "same", f"--from {image}\n--run\necho built-by-one; sleep 0.5\n--layer\n--run\necho second-layer\n")
    procs = [subprocess.Popen(plash.command([PLASH, "build", "--eval-file", str(f)]), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=plash.work) for _ in range(8)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in results]
    assert len({out for out, _ in results}) == 1
    logs = "".join(err for _, err in results)
    assert logs.splitlines().count("built-by-one") == 1
    assert logs.splitlines().count("second-layer") == 1
    assert "waiting for another plash process" in logs


def test_ctrl_c_stops_warm_with_exit_130_and_leaves_nothing(plash: Plash, image: str) -> None:
    files = [write(plash, f"slow{i}", f"#!/usr/bin/env plash\n--from {image}\n--run\nsleep 300 # {i}\n")
             for i in range(2)]
    proc = subprocess.Popen(plash.command([PLASH, "warm", "--progress", "plain", *map(str, files)]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=plash.work)
    step = wait_for_descendant(proc.pid, lambda argv: argv[:2] == ["sleep", "300"])  # a step of this warm runs
    with Exits([step]) as exits:
        os.kill(own_pid(proc), signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert err.splitlines()[-1] == "plash error: interrupted", err
        assert out == ""
        assert exits.running() == [], "a step outlived plash warm"
    assert os.listdir(plash.store / "tmp") == []
