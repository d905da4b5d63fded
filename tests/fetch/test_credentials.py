"""Registry credentials: the files read and written (containers-auth.json(5)), plash login's check, and the whole
round trip against Debian's docker-registry with htpasswd auth (login, import-docker, logout)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import httpx
import pytest
from conftest import PLASH, Plash, make_plash, need
from oci_images import Layout, layer_tar
from servers import Registry

from plash.engine.fetch import credentials as cr
from plash.engine.fetch.login import api_url, check_login
from plash.errors import FetchError, PlashError

PASSWORD = "pw-Xq7:secret-4242"  # a colon inside: only the first one of user:password splits
AUTH = base64.b64encode(f"user:{PASSWORD}".encode()).decode()


def auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of its own and no credentials variables: every file under tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def write(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


# --- which files, in which order


def test_files_are_read_in_podmans_order(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = env / "home"
    assert cr.auth_files() == [f"{home}/.config/containers/auth.json", f"{home}/.docker/config.json"]
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(env / "mine.json"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(env / "run"))
    assert cr.auth_files() == [str(env / "mine.json"), f"{env}/run/containers/auth.json",
                               f"{home}/.config/containers/auth.json", f"{home}/.docker/config.json"]
    monkeypatch.setenv("XDG_CONFIG_HOME", str(env / "cfg"))
    monkeypatch.setenv("DOCKER_CONFIG", str(env / "dock"))
    assert cr.auth_files()[2:] == [f"{env}/cfg/containers/auth.json", f"{env}/dock/config.json"]
    monkeypatch.setenv("REGISTRY_AUTH_FILE", f"{env}/run/containers/auth.json")  # named twice, read once
    assert cr.auth_files()[:2] == [f"{env}/run/containers/auth.json", f"{env}/cfg/containers/auth.json"]


def test_login_writes_the_override_else_the_runtime_dir_else_the_config_dir(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = f"{env}/home/.config/containers/auth.json"
    assert cr.write_file() == config
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(env / "gone"))  # no such directory: podman's fallback
    assert cr.write_file() == config
    (env / "run").mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(env / "run"))
    assert cr.write_file() == f"{env}/run/containers/auth.json"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(env / "mine.json"))
    assert cr.write_file() == str(env / "mine.json")


def test_the_first_file_with_an_entry_wins(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(env / "run"))
    docker = write(env / "home/.docker/config.json", {"auths": {"https://index.docker.io/v1/": auth("hub", "h"),
                                                                "quay.io": auth("docker-quay", "d")}})
    podman = write(env / "run/containers/auth.json", {"auths": {"quay.io": auth("podman-quay", "p")}})
    assert cr.credentials_for("quay.io") == ("podman-quay", "p")
    assert cr.credentials_for("registry-1.docker.io") == ("hub", "h")  # only docker's file has it
    assert cr.find_credentials("registry-1.docker.io") == (str(docker), ("hub", "h"))
    assert cr.credentials_for("ghcr.io") is None
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(write(env / "override.json", {"auths": {"quay.io": auth("o", "o")}})))
    assert cr.credentials_for("quay.io") == ("o", "o")
    podman.unlink()
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    assert cr.credentials_for("quay.io") == ("docker-quay", "d")


# --- keys


def test_keys_name_a_host_in_every_spelling() -> None:
    assert cr.split_key("quay.io") == ("quay.io", "")
    assert cr.split_key("Quay.IO:443") == ("quay.io:443", "")
    assert cr.split_key("https://index.docker.io/v1/") == ("docker.io", "")
    assert cr.split_key("http://localhost:5000/v2/") == ("localhost:5000", "")
    assert cr.split_key("registry-1.docker.io") == ("docker.io", "")
    assert cr.split_key("quay.io/team/app/") == ("quay.io", "team/app")
    assert cr.registry_key("https://index.docker.io/v1/") == "docker.io"
    assert cr.registry_key("127.0.0.1:5000") == "127.0.0.1:5000"
    for bad in ("", "quay.io/team", "a b", "user@host"):
        with pytest.raises(PlashError, match="not a registry"):
            cr.registry_key(bad)


@pytest.mark.parametrize("key", ["docker.io", "index.docker.io", "https://index.docker.io/v1/", "registry-1.docker.io",
                                 "https://registry-1.docker.io"])
def test_docker_hub_goes_by_every_name(key: str) -> None:
    assert cr.best_key({"quay.io": {}, key: {}}, "registry-1.docker.io") == key


def test_the_most_specific_key_wins_and_ports_count() -> None:
    auths = {"quay.io/team": {}, "quay.io": {}, "quay.io/team/app": {}, "quay.io/other": {}, "quay.io:8443": {}}
    assert cr.best_key(auths, "quay.io", "team/app") == "quay.io/team/app"
    assert cr.best_key(auths, "quay.io", "team/app/sub") == "quay.io/team/app"
    assert cr.best_key(auths, "quay.io", "team/other") == "quay.io/team"
    assert cr.best_key(auths, "quay.io", "teams/x") == "quay.io"  # a namespace is whole path components
    assert cr.best_key(auths, "quay.io") == "quay.io"  # no repository: the registry's own key
    assert cr.best_key({"quay.io/team": {}}, "quay.io") == "quay.io/team"  # ... else a namespace in it
    assert cr.best_key({"quay.io/team": {}}, "quay.io", "other/x") is None
    assert cr.best_key(auths, "quay.io:8443") == "quay.io:8443"
    assert cr.best_key({"quay.io": {}}, "quay.io:8443") is None
    assert cr.best_key({"docker.io/library/alpine": {}}, "registry-1.docker.io", "library/alpine") == "docker.io/library/alpine"


def test_entries_decode_to_user_and_password() -> None:
    assert cr.decode_entry({"auth": AUTH}, "f", "k") == ("user", PASSWORD)
    assert cr.decode_entry({"username": "u", "password": "p"}, "f", "k") == ("u", "p")  # docker's other form
    assert cr.decode_entry({}, "f", "k") is None  # what docker writes for a registry its credsStore holds
    assert cr.decode_entry({"auth": ""}, "f", "k") is None


# --- malformed files: one line, the file named, never the secret


@pytest.mark.parametrize(("text", "said"), [
    ("{", "not JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
    ("[]", "not a credentials file (not a JSON object)"),
    ('{"auths": []}', '"auths" is not a JSON object'),
    ('{"auths": {"quay.io": "x"}}', "the entry for 'quay.io' is not a JSON object"),
    ('{"auths": {"quay.io": {"auth": 7}}}', "the \"auth\" of 'quay.io' is not a string"),
    (json.dumps({"auths": {"quay.io": {"auth": AUTH + "!"}}}), "the \"auth\" of 'quay.io' is not base64 of user:password"),
    (json.dumps({"auths": {"quay.io": {"auth": base64.b64encode(PASSWORD.replace(":", "").encode()).decode()}}}),
     "the \"auth\" of 'quay.io' is not base64 of user:password"),  # no colon: no user:password
])
def test_a_malformed_file_is_one_line_naming_it(env: Path, text: str, said: str) -> None:
    path = write(env / "home/.docker/config.json", text)
    with pytest.raises(PlashError) as e:
        cr.credentials_for("quay.io")
    assert e.value.lines() == [f"plash error: {path}: {said}"]
    assert PASSWORD not in e.value.message and AUTH not in e.value.message
    assert PASSWORD.replace(":", "") not in e.value.message


def test_an_unreadable_file_is_one_line_too(env: Path) -> None:
    (env / "home/.docker/config.json").mkdir(parents=True)  # a directory: EISDIR
    with pytest.raises(PlashError, match=r"config\.json: cannot read the credentials file \(Is a directory\)"):
        cr.credentials_for("quay.io")


def test_credential_helpers_are_an_error_only_without_plain_credentials(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docker = write(env / "home/.docker/config.json", {"credHelpers": {"quay.io": "secretservice"}, "credsStore": "desktop",
                                                      "auths": {"https://index.docker.io/v1/": {}}})
    for registry, helper in (("quay.io", "secretservice"), ("registry-1.docker.io", "desktop")):
        with pytest.raises(PlashError) as e:
            cr.credentials_for(registry)
        assert e.value.message.startswith(f"{docker}: the credentials for {registry} are left to a credential helper "
                                          f"(docker-credential-{helper}), which plash does not run")
        assert len(e.value.lines()) == 1
    assert cr.credentials_for("ghcr.io") is None  # a credsStore holds only what docker marked: anonymous pulls still work
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(write(env / "mine.json", {"auths": {"quay.io": auth("u", "p")}})))
    assert cr.credentials_for("quay.io") == ("u", "p")


# --- writing


def test_store_keeps_everything_else_and_writes_0600_atomically(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = env / "run"
    run.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    path = cr.store_credentials("quay.io", "u", "first")  # no file and no directory yet
    assert path == f"{run}/containers/auth.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(run / "containers").st_mode) == 0o700
    doc = {"auths": {"quay.io": auth("u", "first"), "https://quay.io/v1/": auth("old", "x"), "quay.io/team": auth("t", "t"),
                     "ghcr.io": {"auth": "Z2g6Z2g=", "email": "kept@example"}},
           "credHelpers": {"gcr.io": "gcloud"}, "HttpHeaders": {"X-Kept": "1"}}
    write(Path(path), doc)
    os.chmod(path, 0o644)
    assert cr.store_credentials("https://quay.io", "u2", PASSWORD) == path
    after = json.loads(Path(path).read_text())
    assert after == {**doc, "auths": {"quay.io/team": auth("t", "t"), "ghcr.io": doc["auths"]["ghcr.io"],  # type: ignore[dict-item]
                                      "quay.io": auth("u2", PASSWORD)}}  # every spelling of quay.io's own key replaced
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(run / "containers") == ["auth.json"]  # no temp file left
    assert cr.credentials_for("quay.io") == ("u2", PASSWORD)
    assert cr.remove_credentials("quay.io")
    assert not cr.remove_credentials("quay.io")
    assert json.loads(Path(path).read_text())["auths"] == {"quay.io/team": auth("t", "t"), "ghcr.io": doc["auths"]["ghcr.io"]}
    assert cr.credentials_for("quay.io") == ("t", "t")  # a namespace's key is not the registry's own: kept


def test_store_writes_through_a_symlink_and_never_over_a_malformed_file(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = write(env / "dotfiles/auth.json", {"auths": {}})
    link = env / "link.json"
    link.symlink_to(real)
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(link))
    cr.store_credentials("docker.io", "u", "p")
    assert link.is_symlink()
    assert json.loads(real.read_text()) == {"auths": {"docker.io": auth("u", "p")}}
    real.write_text("{broken")
    with pytest.raises(PlashError, match="not JSON"):
        cr.store_credentials("docker.io", "u", "p")
    assert real.read_text() == "{broken"
    with pytest.raises(PlashError, match="cannot contain ':'"):
        cr.store_credentials("docker.io", "a:b", "p")


def test_no_user_or_plash_run_import_loads_the_credentials() -> None:
    code = "import sys, plash.__main__, plash.launch.run; print('plash.engine.fetch.credentials' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# --- plash login's check, in process


def fake_registry(password: str, realm: str = "https://auth.example/token") -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    """A registry with a Bearer token service that gives a token for user:password only."""
    asked: list[httpx.Request] = []
    good = "Basic " + base64.b64encode(f"user:{password}".encode()).decode()

    def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))  # unread, as a transport gives it

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example":
            asked.append(request)
            return answer(200, b'{"token": "tok"}') if request.headers.get("Authorization") == good else answer(401)
        if request.headers.get("Authorization") == "Bearer tok":
            return answer(200, b"{}")
        return answer(401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="reg"'})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), asked


async def test_login_asks_the_token_service_with_no_scope() -> None:
    c, asked = fake_registry(PASSWORD)
    async with c:
        await check_login(c, "registry.example", "user", PASSWORD)
        assert [str(r.url) for r in asked] == ["https://auth.example/token?service=reg"]
        with pytest.raises(FetchError) as e:
            await check_login(c, "registry.example", "user", "wrong")
    assert e.value.lines() == ["plash error: registry.example: login refused (HTTP 401)"]


async def test_login_never_sends_credentials_to_a_plain_http_token_service() -> None:
    c, asked = fake_registry(PASSWORD, realm="http://auth.example/token")
    async with c:
        with pytest.raises(FetchError, match="is not https: the credentials are not sent there"):
            await check_login(c, "registry.example", "user", PASSWORD)
    assert asked == []


def test_the_api_url() -> None:
    assert api_url("docker.io") == "https://registry-1.docker.io/v2/"
    assert api_url("127.0.0.1:5000") == "http://127.0.0.1:5000/v2/"
    assert api_url("::1") == "http://[::1]/v2/"
    assert api_url("quay.io:8443") == "https://quay.io:8443/v2/"


# --- the round trip against a real registry


@pytest.fixture(scope="module")
def locked_registry():
    need(shutil.which("docker-registry") is not None and shutil.which("skopeo") is not None,
         "docker-registry and skopeo are not installed")
    work = tempfile.mkdtemp(prefix="plash-registry-auth-")
    reg = Registry(work, htpasswd={"user": PASSWORD})
    layout = Layout(Path(work) / "layout")
    layout.image([(layer_tar([("etc/", "dir", ""), ("etc/hello", "file", "hello from a locked registry\n")]), "gzip")],
                 tag="one")
    layout.write()
    reg.push(str(layout.path), "one", "test/locked:1")
    yield reg
    reg.close()
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def user(users_base: Path) -> Plash:
    """plash as root, with a home and a runtime dir of its own (never the machine's credentials)."""
    p = make_plash("root", users_base)
    (p.work / "home").mkdir()
    (p.work / "run").mkdir(mode=0o700)
    p.env.update(HOME=str(p.work / "home"), XDG_RUNTIME_DIR=str(p.work / "run"))
    yield p
    subprocess.run(["rm", "-rf", str(p.work)])


def test_login_import_logout(user: Plash, locked_registry: Registry) -> None:
    host = locked_registry.host
    stored = user.work / "run/containers/auth.json"
    runs = []

    def plash(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        r = user(*args, input=input)
        runs.append(r)
        return r

    wrong = plash("login", "--password-stdin", "-u", "user", host, input="not-the-password\n")
    assert (wrong.returncode, wrong.stdout, wrong.stderr) == (1, "", f"plash error: {host}: login refused (HTTP 401)\n")
    assert not stored.exists() and not (user.work / "home/.config").exists()

    anonymous = plash("import-docker", "--quiet", f"{host}/test/locked:1")
    assert (anonymous.returncode, anonymous.stderr) == (
        1, f"plash error: http://{host}/v2/test/locked/manifests/1: HTTP 401 and no token service to ask (not an anonymous registry)\n")

    ok = plash("login", "--password-stdin", "-u", "user", host, input=PASSWORD + "\n")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "Login Succeeded\n")
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert json.loads(stored.read_text()) == {"auths": {host: {"auth": AUTH}}}  # the newline is not the password's

    image = plash("import-docker", "--quiet", f"{host}/test/locked:1")
    assert image.returncode == 0, image.stderr
    exported = user.sh([PLASH, "export-tar", image.stdout.strip(), "-"], input=b"")
    runs.append(exported)
    with tarfile.open(fileobj=io.BytesIO(exported.stdout)) as tar:
        member = next(m for m in tar if m.name.removeprefix("./") == "etc/hello")
        assert tar.extractfile(member).read() == b"hello from a locked registry\n"  # type: ignore[union-attr]

    assert plash("logout", host).returncode == 0
    assert json.loads(stored.read_text()) == {"auths": {}}
    again = plash("logout", host)
    assert (again.returncode, again.stderr) == (1, f"plash error: not logged in to {host}\n")
    assert plash("import-docker", f"{host}/test/locked:1").returncode == 1  # cached layers, but the manifest is locked

    for r in runs:  # the password is never shown, whatever happened
        for stream in (r.stdout, r.stderr):
            text = stream.decode("latin-1") if isinstance(stream, bytes) else stream
            assert PASSWORD not in text and AUTH not in text
    for dirpath, _, filenames in os.walk(user.store):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                data = Path(path).read_bytes()
                assert PASSWORD.encode() not in data and AUTH.encode() not in data, path


def test_login_wants_a_terminal_or_stdin_and_a_user(user: Plash, locked_registry: Registry) -> None:
    host = locked_registry.host
    r = user("login", "-u", "user", host, input="")
    assert (r.returncode, r.stderr) == (1, "plash error: no terminal to ask for the password on: use --password-stdin\n")
    r = user("login", "--password-stdin", host, input=PASSWORD)
    assert (r.returncode, r.stderr) == (1, "plash error: --password-stdin needs --username\n")
    r = user("login", "--password-stdin", "-u", "user", f"{host}/test", input=PASSWORD)
    assert (r.returncode, r.stderr) == (1, f"plash error: not a registry (host or host:port): '{host}/test'\n")
    assert not (user.work / "run/containers").exists()
