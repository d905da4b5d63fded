"""The macro language: tokens, calls, expansion of every macro, located errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plash.engine.plan import layer_keys, split_script
from plash.errors import MacroError, PlashError
from plash.lang.expand import GROUPS, Macro
from plash.lang.macros import MACROS, expand_argv, expand_file, help_text, quote, script_text
from plash.lang.tokens import parse, unquote_words, words_from_argv, words_from_file_text


def ev(*argv: str) -> str:
    return script_text(expand_argv(list(argv)))


def error_of(func: Callable[..., object], *args: object) -> PlashError | None:
    """The PlashError func(*args) raises, or None: for properties where either outcome is fine."""
    try:
        func(*args)
    except PlashError as e:
        return e
    return None


def test_tokens_command_line() -> None:
    calls = parse(words_from_argv(["--from", "1", "-Ax", "a b", "--\\ -y", "--\\", "--# note", "--run", "x"]))
    assert [(c.name, c.args) for c in calls] == [("from", ("1",)), ("A", ()), ("x", ("a b", "-y", "")), ("run", ("x",))]
    assert str(calls[1].where) == "argument 3"


def test_tokens_build_file() -> None:
    text = "#!/usr/bin/env plash\n--apk git  curl\n--run\necho  two  spaces\n\n--# c\n--\\ --literal\n-A vim\n"
    calls = parse(words_from_file_text(text, "f"))
    assert [(c.name, c.args, c.where.line) for c in calls] == [
        ("apk", ("git", "curl"), 2),
        ("run", ("echo  two  spaces", "--literal"), 3),
        ("A", ("vim",), 8),
    ]


@pytest.mark.parametrize(("argv", "message"), [
    (["x"], "argument 1: argument 'x' before any macro"),
    (["--aptt", "x"], "argument 1: unknown macro 'aptt' (did you mean 'apt'?)"),
    (["--from"], "argument 1: --from needs at least 1 argument(s), got 0"),
    (["--from", "1", "2"], "argument 1: --from takes at most 1 argument(s), got 2"),
    (["-1"], "argument 1: invalid macro '-1'"),
    (["--"], "argument 1: empty macro name '--'"),
])
def test_located_errors(argv: list[str], message: str) -> None:
    with pytest.raises(MacroError) as e:
        expand_argv(argv)
    assert e.value.message == message


@pytest.mark.parametrize(("name", "hint"), [
    ("alpine", "give a release: --from alpine:edge"),
    ("Debian", "give a release: --from debian:bookworm"),
    ("arch", "give a release: --from archlinux:current"),
    ("mybox", "give a release, e.g. --from alpine:edge or --from debian:bookworm; a name of plash map: "
              "--from-map NAME"),
])
def test_from_without_a_release_suggests_one(name: str, hint: str) -> None:
    with pytest.raises(MacroError) as e:
        expand_argv(["--from", name])
    assert e.value.message == f"argument 1: --from needs an image id or DISTRO:RELEASE, got {name!r}"
    assert e.value.hint == hint


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["--run", "--from", "-A", "-x", "--\\", "--# c", "--layer", "--nope", "-", "--apt",
                                           "--write-file", "--env", "--hint", "--eval-string", "", "--\\ -y"]),
                          st.text(max_size=8)), max_size=8))
def test_any_words_parse_or_give_a_located_error(words: list[str]) -> None:
    error = error_of(expand_argv, words)
    if isinstance(error, MacroError):
        assert error.message.startswith("argument ") or ":" in error.message
        assert "\n" not in error.lines()[0]
    elif error is not None:
        assert "\n" not in error.message


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_build_file_parses_or_gives_a_located_error(text: str) -> None:
    error = error_of(lambda: parse(words_from_file_text(text, "f")))
    assert error is None or (isinstance(error, MacroError) and error.message.startswith("f:"))


@given(st.text())
def test_quote_survives_the_shell_property(s: str) -> None:
    s = s.replace("\0", "")
    assert unquote_words(quote(s)) == (s,)


@pytest.mark.parametrize("value", ["plain", "it's", "$(rm -rf /)", "`x`", "a\\nb", "tab\tx", "ünï", "-n", "%s", "\\"])
def test_write_file_bytes_survive_a_real_shell(tmp_path: Path, value: str) -> None:
    target = tmp_path / "out"
    arg = "--\\ " + value if value.startswith("-") else value  # a leading dash needs the escape
    script = ev("--write-file", str(target), arg, "second")
    subprocess.run(["sh", "-e", "-c", script], check=True)
    assert target.read_text() == f"{value}\nsecond\n"


def test_every_spec_macro_exists_with_help() -> None:
    spec = """from from-id from-map from-lxc from-url from-tarball from-docker from-debootstrap run x inline
    run-stdin layer l apt apk yum dnf pacman emerge pip pip3 npm add-apt-repository defpm write-file write-script
    import-env invalidate-layer hash-path eval-file eval-string eval-stdin eval-url entrypoint entrypoint-script
    env env-prefix mount hint A D U F C R G f"""
    for name in spec.split():
        assert name in MACROS, name
        assert MACROS[name].help, name
        assert "\n" not in MACROS[name].help, name


def test_expansions() -> None:
    assert ev("--from", "5") == "### plash hint: image=id 5"
    assert ev("--from", "alpine:edge") == "### plash hint: image=lxc alpine:edge"
    assert ev("-x", "a", "b") == "a\nb"
    assert ev("--inline", "a", "b") == "a b"
    assert ev("--apt") == ""
    # the package managers' lines come between the hints of their cache (plash.lang.caches)
    assert ev("--apt", "a", "b c") == (
        "### plash hint: package-cache=apt\napt-get update\napt-get install -y a 'b c'\n"
        "### plash hint: package-cache-end=apt")
    assert ev("--apk", "git") == "### plash hint: package-cache=apk\napk update\napk add git\n" \
                                 "### plash hint: package-cache-end=apk"
    assert ev("--pip3", "x") == "### plash hint: package-cache=pip3\npip3 install x\n" \
                                "### plash hint: package-cache-end=pip3"
    assert ev("--defpm", "mypm", "mypm get {}", "--mypm", "a") == "mypm get a"
    assert ev("--layer", "apt", "a", "b") == (
        "### plash hint: layer\n### plash hint: package-cache=apt\napt-get update\napt-get install -y a\n"
        "### plash hint: package-cache-end=apt\n"
        "### plash hint: layer\n### plash hint: package-cache=apt\napt-get update\napt-get install -y b\n"
        "### plash hint: package-cache-end=apt")
    assert ev("-l") == "### plash hint: layer"
    assert ev("--write-script", "/s", "echo") == "printf '%s\\n' echo > /s\nchmod 755 /s"
    assert ev("--entrypoint", "git", "status x") == "### plash hint: entrypoint=git 'status x'"
    assert ev("--env", "A", "B") == "### plash hint: env=A\n### plash hint: env=B"
    assert ev("--env-prefix", "LC_") == "### plash hint: env-prefix=LC_"
    assert ev("--hint", "k", "v") == "### plash hint: k=v"
    assert ev("-A", "git").startswith("### plash hint: image=lxc alpine:edge\n### plash hint: package-cache=apk\n"
                                      "apk update")
    assert ev("-D", "vim").startswith("### plash hint: image=lxc debian:sid\n### plash hint: package-cache=apt\n"
                                      "apt-get update")
    assert ev("--from-debootstrap", "bookworm") == "### plash hint: image=debootstrap bookworm"


def test_import_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTVAR", "it's here")
    monkeypatch.setenv("_V2", "x")
    assert ev("--import-env", "HOSTVAR:ALIAS") == "export ALIAS='it'\"'\"'s here'"
    assert ev("--import-env", "_V2", "HOSTVAR:_a1") == "export _V2=x\nexport _a1='it'\"'\"'s here'"
    monkeypatch.delenv("HOSTVAR")
    assert ev("--import-env", "HOSTVAR") == ""  # unset on the host: nothing, as in the original
    assert ev("--import-env", "HOSTVAR:ALIAS", "_V2") == "export _V2=x"


@pytest.mark.parametrize(("item", "bad"), [
    ("1X", "1X"), ("A-B", "A-B"), ("A:B-C", "B-C"), ("A:", ""), (":A", ""), ("A:B:C", "B:C"), ("Ä", "Ä"),
    ("A B", "A B"), ("$(id)", "$(id)"), ("A:9", "9"),
])
def test_import_env_names_must_be_shell_names(monkeypatch: pytest.MonkeyPatch, item: str, bad: str) -> None:
    monkeypatch.setenv("A", "x")
    with pytest.raises(MacroError) as e:
        ev("--run", "x", "--import-env", item)
    assert e.value.message == f"argument 3: --import-env: {bad!r} is not a shell variable name"


def test_invalidate_layer_differs_each_time() -> None:
    assert ev("--invalidate-layer") != ev("--invalidate-layer")


def test_hash_path_follows_contents_and_modes_not_mtime(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("one")
    first = ev("--hash-path", str(tmp_path))
    os.utime(f, (1, 1))
    assert ev("--hash-path", str(tmp_path)) == first
    f.write_text("two")
    second = ev("--hash-path", str(tmp_path))
    assert second != first
    f.chmod(0o600)
    assert ev("--hash-path", str(tmp_path)) != second
    assert first.startswith(": plash hash-path ")
    with pytest.raises(MacroError, match="cannot read"):
        ev("--hash-path", str(tmp_path / "missing"))


def test_includes_resolve_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner").write_text("--run\ninner\n--from-tarball\nrel.tar\n")
    (tmp_path / "outer").write_text("--eval-file sub/inner\n--run\nouter\n")
    lines = expand_file(str(tmp_path / "outer"))
    assert script_text(lines) == f"inner\n### plash hint: image=tarball {tmp_path}/sub/rel.tar\nouter"
    assert [str(w) for _, w in lines] == ["sub/inner:1", "sub/inner:3", f"{tmp_path}/outer:2"]
    (tmp_path / "loop").write_text("--eval-file loop\n")
    with pytest.raises(MacroError, match="too deeply"):
        expand_file(str(tmp_path / "loop"))
    (tmp_path / "sub" / "inner").unlink()
    with pytest.raises(MacroError, match="outer:1: cannot read build file"):
        expand_file(str(tmp_path / "outer"))


def test_eval_string_splits_like_a_posix_shell() -> None:
    assert ev("--eval-string", "--run 'echo from string'") == "echo from string"
    assert ev("--eval-string", "--run \"a  b\" c\\ d --layer -x 'e'\\''f'") == "a  b\nc d\n### plash hint: layer\ne'f"
    assert ev("--eval-string", "--\\ --run\necho hi") == "echo\nhi"  # a literal argument, then split
    assert ev("--eval-string", "-A git", "--run x") == (
        "### plash hint: image=lxc alpine:edge\n### plash hint: package-cache=apk\napk update\napk add git\n"
        "### plash hint: package-cache-end=apk\nx")
    assert ev("--eval-string", "", "--run ''") == ""
    assert ev("--run", "a", "--eval-string", "--run '--# no' '--\\ -y' '--\\'") == "a\n-y\n"


def test_eval_string_words_are_command_line_words() -> None:
    # a word with spaces is an argument, even if it starts with a dash: macro names have none
    assert ev("--eval-string", "--run '--not a macro'") == "--not a macro"
    assert ev("--run", "-x y", "--from-id", "3") == "-x y\n### plash hint: image=id 3"


@pytest.mark.parametrize(("argv", "message"), [
    (["--from", "1", "--eval-string", "--run ok --aptt x"],
     "argument 3: eval-string:3: unknown macro 'aptt' (did you mean 'apt'?)"),
    (["--eval-string", "stray --run x"], "argument 1: eval-string:1: argument 'stray' before any macro"),
    (["--eval-string", "--run x --from"], "argument 1: eval-string:3: --from needs at least 1 argument(s), got 0"),
    (["--eval-string", "--run 'unclosed"], "argument 1: --eval-string: cannot split \"--run 'unclosed\" like a shell: no closing quotation"),
    (["--eval-string", "--eval-string --eval-string"], "argument 1: eval-string:1: --eval-string needs at least 1 argument(s), got 0"),
])
def test_eval_string_errors_are_located(argv: list[str], message: str) -> None:
    with pytest.raises(MacroError) as e:
        expand_argv(argv)
    assert e.value.message == message


def test_eval_string_in_a_build_file_takes_the_rest_of_the_line(tmp_path: Path) -> None:
    f = tmp_path / "build"
    f.write_text("--run\nfirst\n--eval-string --run 'echo from string' --layer\n")
    lines = expand_file(str(f))
    assert script_text(lines) == "first\necho from string\n### plash hint: layer"
    assert [str(w) for _, w in lines][1] == f"{f}:3: eval-string:1"


def test_run_stdin_drops_the_final_newlines(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    for text, expect in (("a\nb\n", "a\nb"), ("a\nb", "a\nb"), ("a\n\n\n", "a"), ("\n", ""), ("", ""),
                         ("a\n\nb\n", "a\n\nb")):
        monkeypatch.setattr("sys.stdin", io.StringIO(text))
        assert ev("--run-stdin", "--run", "z") == (expect + "\n" if expect else "") + "z", text


def test_layers_and_keys() -> None:
    lines = expand_argv(["--from", "3", "--run", "a", "--layer", "--run", "b", "--entrypoint", "x", "--layer"])
    source, raw = split_script(lines)
    assert source is not None
    assert (source.kind, source.args) == ("id", ("3",))
    layers = layer_keys("base", raw)
    assert [layer.shell for layer in layers] == ["a", "b"]
    assert layers[1].meta == {"entrypoint": ["x"]}
    again = layer_keys("base", split_script(expand_argv(["--from", "3", "--run", "a", "--layer", "--run", "c"]))[1])
    assert again[0].key == layers[0].key
    assert again[1].key != layers[1].key
    assert layer_keys("other", raw)[0].key != layers[0].key


@pytest.mark.parametrize("arg", ["0", "²", "٣", "0000", "9" * 5000])
def test_from_refuses_what_is_no_image_id(arg: str) -> None:
    for name in ("--from", "--from-id"):
        with pytest.raises(MacroError) as e:
            expand_argv([name, arg])
        assert str(e.value).startswith("argument 1: image must be a positive number, got: ")


def test_from_takes_ascii_ids() -> None:
    assert ev("--from", "12") == ev("--from-id", "012") == "### plash hint: image=id 12"


def test_a_nul_byte_in_a_build_file_is_a_located_error(tmp_path: Path) -> None:
    f = tmp_path / "b.plash"
    f.write_bytes(b"--from 1\n--run\necho a\0b\n")
    with pytest.raises(MacroError) as e:
        expand_file(str(f))
    assert str(e.value) == f"{f}:3: a NUL byte (no argument or shell line can hold one)"


def test_endless_build_files_are_refused() -> None:
    with pytest.raises(MacroError) as e:
        expand_argv(["--eval-file", "/dev/zero"])
    assert str(e.value) == "argument 1: build file /dev/zero is larger than the 16 MiB plash reads as macros or shell text"


def test_layer_of_an_including_macro_keeps_the_included_locations() -> None:
    # --layer MACRO used to mix located (line, where) pairs into plain lines for an eval-* MACRO: a TypeError
    lines = expand_argv(["--layer", "eval-string", "--run a", "--run b"])
    assert script_text(lines) == "### plash hint: layer\na\n### plash hint: layer\nb"
    assert [str(w) for _, w in lines] == ["argument 1", "argument 1: eval-string:1", "argument 1", "argument 1: eval-string:1"]


def test_newlines_only_in_the_arguments_of_multiline_macros() -> None:
    multiline = {name for name, m in MACROS.items() if m.multiline}
    assert multiline == {"run", "x", "inline", "write-file", "write-script", "entrypoint-script", "eval-string"}
    assert ev("--write-file", "/f", "a\nb") == "printf '%s\\n' 'a\nb' > /f"
    with pytest.raises(MacroError, match="--env: arguments must not contain newlines"):
        ev("--env", "A\nB")


def test_help_groups_come_in_their_order_and_are_closed() -> None:
    listing = help_text()
    headers = [line[:-1] for line in listing.splitlines() if not line.startswith(" ")]
    assert headers == list(GROUPS)
    with pytest.raises(ValueError, match="unknown group"):
        Macro("nope", lambda ctx, call: [], "help", "no such group")


def test_importing_the_macros_loads_no_slow_module() -> None:
    # every plash executable imports plash.lang on its start path
    code = "import sys, plash.lang.macros; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())
    assert loaded & {"typing", "dataclasses", "re", "shlex", "hashlib", "difflib", "urllib.request", "enum"} == set()
