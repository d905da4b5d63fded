"""What a build shows while it runs: --progress tty|plain|json, --quiet anywhere, carriage returns, warm's prefixes.

The terminal tests run plash inside a real tmux pane and read what a person
would see there (tmux capture-pane), during the run and after it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import rootfs
from conftest import PLASH, Plash, need
from oci_images import Layout, layer_tar
from servers import Registry

KINDS = {"download-start", "download-progress", "download-done", "note", "step-start", "step-output", "step-done"}


def events(stderr: str) -> list[dict[str, object]]:
    found = [json.loads(line) for line in stderr.splitlines()]  # every line is one JSON object
    assert all(isinstance(e, dict) and e["kind"] in KINDS for e in found), stderr
    return found


@pytest.mark.parametrize("how", ["option", "env"])
def test_json_progress_is_one_event_per_line_with_a_done_per_job(plash: Plash, image: str, how: str) -> None:
    macros = ["--from", image, "--run", f"echo {how} one", "--layer", "--run", "echo two; exit 0"]
    if how == "option":
        r = plash("build", "--progress", "json", *macros)
    else:
        r = plash("build", *macros, env={"PLASH_PROGRESS": "json"})
    assert r.returncode == 0, r.stderr
    found = events(r.stderr)
    starts = [e["job"] for e in found if e["kind"] == "step-start"]
    dones = [e for e in found if e["kind"] == "step-done"]
    assert starts == ["layer 1/2 (argument 3)", "layer 2/2 (argument 6)"]
    assert [e["job"] for e in dones] == starts
    assert all(e["status"] == "done" and e["exit"] == 0 and isinstance(e["elapsed"], float) for e in dones)
    assert {e["layer"] for e in dones} == {"layer 1/2", "layer 2/2"}
    lines = [e["line"] for e in found if e["kind"] == "step-output" and e["job"] == starts[0]]
    assert lines == [f"+ echo {how} one", f"{how} one"]
    assert r.stdout.strip().isdigit()


def test_json_progress_of_a_failed_step_says_so(plash: Plash, image: str) -> None:
    r = plash("build", "--progress=json", "--from", image, "--run", "echo doomed; exit 4")
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[-1] == "plash error: build failed at argument 3 (exit 4)"
    done = [e for e in events("\n".join(lines[:-1])) if e["kind"] == "step-done"]
    assert [(e["status"], e["exit"]) for e in done] == [("failed", 4)]


def test_a_bad_progress_mode_is_one_line(plash: Plash, image: str) -> None:
    r = plash("build", "--progress", "fancy", "--from", image, "--run", "true")
    assert r.returncode == 1
    assert "plash error: --progress is one of auto, tty, plain, json, got 'fancy'" in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("words", [
    ["build", "-q", "--from", "{image}", "--run", "echo {n}"],
    ["build", "--from", "{image}", "--quiet", "--run", "echo {n}"],
    ["build", "--from", "{image}", "--run", "echo {n}", "-q"],
    ["-q", "--from", "{image}", "--run", "echo {n}", "--", "true"],
    ["b", "run", "--from", "{image}", "-q", "--run", "echo {n}", "--", "true"],
])
def test_quiet_anywhere_before_the_command_hides_the_steps_output(plash: Plash, image: str,
                                                                  words: list[str]) -> None:
    n = str(time.monotonic_ns())
    r = plash(*[w.format(image=image, n=n) for w in words])
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


def test_quiet_shows_a_failed_steps_output(plash: Plash, image: str) -> None:
    r = plash("build", "-q", "--from", image, "--run", "echo the clue; exit 2")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "plash: the last 3 line(s) of layer 1/1 (argument 3), which failed:",
        "  + echo the clue", "  the clue", "  + exit 2",
        "plash error: build failed at argument 3 (exit 2)",
    ]


def test_carriage_return_progress_is_its_latest_state_in_plain_mode(plash: Plash, image: str) -> None:
    r = plash("build", "--progress", "plain", "--from", image, "--run",
              r"printf 'fetch 10%%\rfetch 50%%\rfetch 100%%\n'; printf 'next line\n'")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    lines = r.stderr.splitlines()
    assert "fetch 100%" in lines and "next line" in lines
    assert not any("10%" in line for line in lines if not line.startswith("+ "))  # the trace shows the command


def test_warm_prefixes_each_steps_lines_and_repeats_a_failure_at_the_end(plash: Plash, image: str) -> None:
    good, bad = plash.work / "good", plash.work / "bad"
    good.write_text(f"#!/usr/bin/env plash\n--from {image}\n--run\necho good-$$\necho done-good\n")
    bad.write_text(f"#!/usr/bin/env plash\n--from {image}\n--run\necho bad-line\nexit 7\n")
    r = plash("warm", "--progress", "plain", "--keep-going", "-j", "2", str(good), str(bad))
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    good_tag, bad_tag = f"[layer 1/1 ({good}:3)]", f"[layer 1/1 ({bad}:3)]"
    assert f"{good_tag} done-good" in lines
    assert f"{bad_tag} bad-line" in lines
    output = [line for line in lines if line.startswith("[")]
    assert all(line.startswith((good_tag, bad_tag)) for line in output), output
    # the failed step's last lines again, together, after everything else
    at = lines.index(f"plash: the last 3 line(s) of layer 1/1 ({bad}:3), which failed:")
    assert lines[at + 1:at + 4] == ["  + echo bad-line", "  bad-line", "  + exit 7"]
    assert r.stdout.split() == [r.stdout.split()[0], str(good)]


# -- on a real terminal ---------------------------------------------------------


class Pane:
    """A tmux session of its own (its own server socket), one pane of 160x40, running a shell."""

    def __init__(self, plash: Plash) -> None:
        need(shutil.which("tmux") is not None, "tmux is not installed")
        self.socket = tempfile.mktemp(prefix="plash-tmux-", dir="/tmp")
        self.plash = plash
        self.tmux("new-session", "-d", "-x", "160", "-y", "40", "-s", "t", "sh")
        self.tmux("set-option", "-g", "history-limit", "5000")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, check=True,
                              env={**os.environ, "TERM": "xterm-256color"}).stdout

    def send(self, line: str) -> None:
        self.tmux("send-keys", "-t", "t", line, "Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t", "-S", "-200")

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)
        with contextlib.suppress(OSError):
            os.unlink(self.socket)


@pytest.fixture
def pane(root_plash: Plash):
    p = Pane(root_plash)
    yield p
    p.close()


def command(plash: Plash, *args: str) -> str:
    env = f"PLASH_DATA={plash.store} HOME={plash.home} TERM=xterm-256color"
    quoted = " ".join("'" + a.replace("'", "'\\''") + "'" for a in [PLASH, *args])
    return f"cd {plash.work} && env {env} {quoted}; echo EXIT=$?"


def test_a_step_row_shows_elapsed_time_and_nothing_is_left_after(pane: Pane, root_plash: Plash,
                                                                busybox_tgz: Path) -> None:
    image = root_plash.import_tar(busybox_tgz)
    # the step waits for the test, so the row is looked at while the step runs (steps see home, not /tmp)
    shared = Path(tempfile.mkdtemp(prefix=".plash-test-progress-", dir=root_plash.home))
    flag = shared / "go"
    pane.send(command(root_plash, "build", "--from", image, "--run",
                      f"set +x; echo step-started; while [ ! -e {flag} ]; do sleep 0.05; done; echo step-ending"))
    during = pane.wait_for("step-started")
    time.sleep(1.2)  # the elapsed column ticks
    during = pane.screen()
    row = [line for line in during.splitlines() if line.strip().startswith(("⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦",
                                                                               "⠧", "⠇", "⠏"))]
    assert row, during
    assert "layer 1/1 (argument 3): step-started" in row[-1] and "0:00:0" in row[-1], during
    assert "plash: building layer 1/1 (argument 3)" in during
    flag.touch()
    try:
        after = pane.wait_for("EXIT=0")
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    lines = [line for line in after.splitlines() if line.strip()]
    assert not any("0:00:0" in line for line in lines), after  # no live row left behind
    assert lines[lines.index("EXIT=0") - 1].strip().isdigit(), after  # the id, then the shell's EXIT line
    assert "step-ending" in after


def test_a_registry_import_and_a_failing_step_on_a_terminal(pane: Pane, root_plash: Plash) -> None:
    need(shutil.which("docker-registry") is not None and shutil.which("skopeo") is not None,
         "docker-registry and skopeo are not installed")
    work = tempfile.mkdtemp(prefix="plash-registry-")
    reg = Registry(work)
    try:
        layout = Layout(Path(work) / "layout")
        buf = io.BytesIO()
        rootfs.busybox_tar(buf, "")
        layout.image([(buf.getvalue(), "gzip"), (layer_tar([("etc/three", "file", "three\n")]), "gzip")],
                     tag="two")
        layout.write()
        reg.push(str(layout.path), "two", "test/two:1")
        pane.send(command(root_plash, "build", "--from-docker", f"{reg.host}/test/two:1", "--run",
                          "echo about to fail; exit 5"))
        after = pane.wait_for("EXIT=1")
    finally:
        reg.close()
        shutil.rmtree(work, ignore_errors=True)
    lines = [line.rstrip() for line in after.splitlines() if line.strip()]
    downloaded = [line for line in lines if line.startswith("plash: downloaded ")]
    assert len(downloaded) == 2, after  # one per layer, each with its size
    assert all(" MB in " in line and "verified" in line for line in downloaded), after
    assert "about to fail" in after
    assert lines[lines.index("EXIT=1") - 1] == "plash error: build failed at argument 3 (exit 5)", after
    assert not any("0:00:0" in line or "━" in line for line in lines), after  # no row, no bar left over


def test_plain_builds_say_when_each_step_ended(plash: Plash, image: str) -> None:
    r = plash("build", "--progress", "plain", "--from", image, "--run", "echo p1")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"plash: built layer 1/1 \(argument 3\) \(\d+\.\ds\)", r.stderr.splitlines()[-1]), r.stderr


def test_warm_tells_a_cancelled_step_from_a_failed_one(plash: Plash, image: str) -> None:
    bad = plash.work / "bad"
    slow = plash.work / "slow"
    bad.write_text(f"#!/usr/bin/env plash\n--from {image}\n--run\nexit 5\n")
    slow.write_text(f"#!/usr/bin/env plash\n--from {image}\n--run\nsleep 300\n")
    r = plash("warm", "--progress", "json", "-j", "2", str(slow), str(bad))
    assert r.returncode == 1
    done = {e["job"]: e["status"] for e in events("\n".join(line for line in r.stderr.splitlines()
                                                          if line.startswith("{"))) if e["kind"] == "step-done"}
    assert done == {f"layer 1/1 ({bad}:3)": "failed", f"layer 1/1 ({slow}:3)": "cancelled"}, r.stderr
    r = plash("warm", "--progress", "plain", "-j", "2", str(slow), str(bad))
    assert f"plash: cancelled layer 1/1 ({slow}:3)" in r.stderr
    assert "which failed" not in r.stderr.split(f"of layer 1/1 ({bad}:3), which failed:")[-1], r.stderr
