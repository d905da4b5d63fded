"""A forked namespace child reports a failure in one line; a traceback only when PLASH_DEBUG asks for one."""

from __future__ import annotations

import pytest

from plash.launch.child import in_namespace


def fail() -> None:
    raise ValueError("broken on purpose")


@pytest.mark.parametrize(("debug", "traceback"), [("1", True), ("0", False), ("", False)])
def test_a_traceback_only_with_plash_debug(debug: str, traceback: bool, monkeypatch: pytest.MonkeyPatch,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PLASH_DEBUG", debug)
    assert in_namespace(fail) == 1
    err = capfd.readouterr().err
    assert err.endswith("plash error: broken on purpose\n")
    assert ("Traceback (most recent call last)" in err) == traceback
