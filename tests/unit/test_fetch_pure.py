"""Pure parts of fetching: which registries may be plain http, and the checks on registry documents."""

from __future__ import annotations

import pytest

from plash.engine.fetch.http import FetchError, size_text
from plash.engine.fetch.oci import (
    check_descriptor,
    check_manifest,
    choose_manifest,
    is_insecure_ok,
    is_loopback,
    parse_json,
    registry_host,
)
from plash.engine.imports.oci import config_meta

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("registry", [
    "127.0.0.1", "127.0.0.1:5000", "127.1.2.3:80", "localhost", "localhost:5000", "LOCALHOST:5000",
    "[::1]", "[::1]:5000", "::1", "[0:0:0:0:0:0:0:1]:443", "[::ffff:127.0.0.1]:5000",
])
def test_loopback_registries_may_be_plain_http(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLASH_INSECURE_REGISTRIES", raising=False)
    assert is_loopback(registry)
    assert is_insecure_ok(registry)


@pytest.mark.parametrize("registry", [
    "127.evil.example", "127.evil.example:5000", "127.0.0.1.nip.io", "127.0.0.1.nip.io:5000", "127.0.0.1.invalid",
    "127.1", "127.0.0.1:", "127.0.0.1:50x0", "127.0.0.1:5000:1", "localhost.evil.example", "localhost:", "[::1]x",
    "[::1", "[127.0.0.1]:5000", "0.0.0.0:5000", "[::]:5000", "10.0.0.1:5000", "[fe80::1]:5000", "registry.example:5000",
    "docker.io", "127.0.0.1\n:5000",
])
def test_other_registries_need_https(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLASH_INSECURE_REGISTRIES", raising=False)
    assert not is_loopback(registry)
    assert not is_insecure_ok(registry)


def test_insecure_registries_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLASH_INSECURE_REGISTRIES", "registry.lan, 10.0.0.1:5000,[fd00::1]:5000")
    assert is_insecure_ok("registry.lan")
    assert is_insecure_ok("registry.lan:5000")
    assert is_insecure_ok("10.0.0.1:5000")
    assert not is_insecure_ok("10.0.0.1:5001")
    assert is_insecure_ok("[fd00::1]:5000")
    assert not is_insecure_ok("127.evil.example:5000")


def test_registry_host() -> None:
    assert registry_host("a.example:5000") == ("a.example", "5000")
    assert registry_host("a.example") == ("a.example", None)
    assert registry_host("[::1]:5000") == ("::1", "5000")
    assert registry_host("[::1]") == ("::1", None)
    assert registry_host("::1") == ("::1", None)


@pytest.mark.parametrize(("body", "wrong"), [
    (b"<html>not json</html>", "is not JSON"),
    (b"\xff\xfe", "is not JSON"),
    (b"[" * 100_000, "is not JSON"),  # nested too deep for the parser
    (b"[]", "is not a JSON object but a list"),
    (b'"x"', "is not a JSON object but a string"),
    (b"null", "is not a JSON object but null"),
])
def test_parse_json_says_what_is_wrong(body: bytes, wrong: str) -> None:
    with pytest.raises(FetchError) as e:
        parse_json(body, "http://r/v2/x/manifests/1", "the manifest")
    assert e.value.message.startswith(f"http://r/v2/x/manifests/1: the manifest {wrong}")


def good_manifest() -> dict:
    return {"schemaVersion": 2, "config": {"digest": DIGEST, "size": 10},
            "layers": [{"digest": DIGEST, "size": 3, "mediaType": "application/vnd.oci.image.layer.v1.tar"}]}


@pytest.mark.parametrize(("change", "wrong"), [
    (lambda m: m.pop("layers"), "the manifest has no list of layers"),
    (lambda m: m.update(layers={"a": 1}), "the manifest has no list of layers"),
    (lambda m: m.update(schemaVersion=1), "unsupported manifest (schema 1)"),
    (lambda m: m.pop("config"), "the config of the manifest is not an object but null"),
    (lambda m: m["config"].pop("digest"), "the config of the manifest has no valid sha256 digest (digest: none)"),
    (lambda m: m["config"].update(size="10"), "the config of the manifest has no valid size (size: '10')"),
    (lambda m: m["config"].update(size=True), "the config of the manifest has no valid size (size: True)"),
    (lambda m: m["layers"].append("x"), "layer 2 of the manifest is not an object but a string"),
    (lambda m: m["layers"][0].pop("digest"), "layer 1 of the manifest has no valid sha256 digest"),
    (lambda m: m["layers"][0].update(digest="sha256:../../etc"), "layer 1 of the manifest has no valid sha256 digest"),
    (lambda m: m["layers"][0].update(digest=DIGEST.upper()), "layer 1 of the manifest has no valid sha256 digest"),
    (lambda m: m["layers"][0].update(digest="sha512:" + "a" * 128), "layer 1 of the manifest has no valid sha256 digest"),
    (lambda m: m["layers"][0].update(size=-1), "layer 1 of the manifest has no valid size (size: -1)"),
])
def test_check_manifest_says_what_is_wrong(change, wrong: str) -> None:
    assert check_manifest(good_manifest(), "M") == good_manifest()
    m = good_manifest()
    change(m)
    with pytest.raises(FetchError) as e:
        check_manifest(m, "M")
    assert e.value.message.startswith(f"M: {wrong}")


def test_check_descriptor_size_may_be_optional() -> None:
    assert check_descriptor({"digest": DIGEST}, "W", "x", need_size=False) == {"digest": DIGEST}
    with pytest.raises(FetchError, match="W: x has no valid size"):
        check_descriptor({"digest": DIGEST}, "W", "x")


@pytest.mark.parametrize(("index", "wrong"), [
    ([], "the manifest list has no list of manifests"),
    ({"manifests": {"a": 1}}, "the manifest list has no list of manifests"),
    ({"manifests": ["x", 1, None, {"platform": "linux"}]}, "no linux/amd64 image in the manifest list (has: None/None)"),
    ({"manifests": [{"platform": {"os": "linux", "architecture": "amd64"}}]},
     "the linux/amd64 entry of the manifest list has no valid sha256 digest"),
    ({"manifests": [{"digest": "sha256:x/../../y", "platform": {"os": "linux", "architecture": "amd64"}}]},
     "the linux/amd64 entry of the manifest list has no valid sha256 digest"),
])
def test_choose_manifest_of_a_malformed_index(index: object, wrong: str) -> None:
    with pytest.raises(FetchError) as e:
        choose_manifest(index, "amd64", where="L")
    assert e.value.message.startswith(f"L: {wrong}")


def test_config_meta() -> None:
    config = {"config": {"Env": ["A=1"], "WorkingDir": "/w", "Entrypoint": ["/e"], "Cmd": ["c", "d"]}}
    assert config_meta(config) == {"oci_env": ["A=1"], "oci_workdir": ["/w"], "oci_cmd": ["/e", "c", "d"]}
    assert config_meta({"config": {"Cmd": "/bin/sh"}}) == {"oci_cmd": ["/bin/sh"]}  # as Docker reads it
    assert config_meta({"config": None}) == {} == config_meta({})


@pytest.mark.parametrize(("config", "wrong"), [
    ([], "not a JSON object"),
    ({"config": []}, "its config is not an object"),
    ({"config": {"Env": "A=1"}}, "config.Env is not a list of strings"),
    ({"config": {"Env": [1]}}, "config.Env is not a list of strings"),
    ({"config": {"Cmd": ["a", {"b": 1}]}}, "config.Cmd is not a list of strings"),
    ({"config": {"Entrypoint": {"a": 1}}}, "config.Entrypoint is not a list of strings"),
    ({"config": {"Cmd": ["a\0b"]}}, "config.Cmd is not a list of strings"),
    ({"config": {"WorkingDir": ["/"]}}, "config.WorkingDir is not a string"),
])
def test_config_meta_of_a_malformed_config(config: object, wrong: str) -> None:
    with pytest.raises(FetchError) as e:
        config_meta(config, "C")
    assert e.value.message == f"C: {wrong}"


def test_size_text() -> None:
    assert [size_text(n) for n in (4 << 20, 64 << 20, 1 << 10, 1536, 100)] == ["4 MiB", "64 MiB", "1 KiB", "1536 bytes",
                                                                               "100 bytes"]
