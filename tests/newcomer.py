"""A newcomer's session on a fresh machine, for tests/integration/test_install.py.

    unshare --mount python3 tests/newcomer.py CONFIG.json   # as root; prints a JSON list of results

Runs as root in a mount namespace of its own, where a fresh home is bound over
the test user's home and empty directories over /usr/local/bin and
/usr/local/share/man, so nothing it
installs is seen outside and two test runs at once do not meet. There it:

1. runs `session` as the user in a login bash (the shell the newcomer types
   README's command into), with a `sudo` first on PATH that has this process
   run the command as root, as sudo would: same arguments (expanded by the
   user's shell), the caller's cwd, stdin, stdout and stderr, a reset
   environment, the exit status passed back. `apt-get` is not run: the test
   checked before that the packages are installed, and a second apt at once
   would fail on dpkg's lock;
2. runs each of `logins` in a fresh login shell of the user (`runuser -l`).
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import threading

SHIM = """#!{python}
# sudo for tests/newcomer.py: the root process there runs the command.
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect({sock!r})
socket.send_fds(s, [json.dumps([sys.argv[1:], os.getcwd()]).encode()], [0, 1, 2])
s.shutdown(socket.SHUT_WR)
sys.exit(int(s.recv(16) or b"1"))
"""


def write_shim(path: str, sock: str) -> None:
    """The `sudo` that the user's shell finds first on PATH."""
    with open(path, "w") as f:
        f.write(SHIM.format(python=sys.executable, sock=sock))
    os.chmod(path, 0o755)


def _as_root(argv: list[str], cwd: str, fds: list[int], user: pwd.struct_passwd) -> int:
    if os.path.basename(argv[0]) == "apt-get":
        os.write(fds[2], f"newcomer: not run (installed already): {' '.join(argv)}\n".encode())
        return 0
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "USER": "root", "LOGNAME": "root", "LANG": "C.UTF-8", "SUDO_USER": user.pw_name,
           "SUDO_UID": str(user.pw_uid), "SUDO_GID": str(user.pw_gid)}
    try:
        return subprocess.run(argv, cwd=cwd, stdin=fds[0], stdout=fds[1], stderr=fds[2], env=env).returncode
    except OSError as e:
        os.write(fds[2], f"sudo: {argv[0]}: {e.strerror}\n".encode())
        return 1


def serve_sudo(server: socket.socket, user: pwd.struct_passwd, log: list[list[str]]) -> None:
    """Answer the shim's requests, one at a time, from the test user only."""
    while True:
        conn, _ = server.accept()
        with conn:
            uid = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            if int.from_bytes(uid[4:8], sys.byteorder) != user.pw_uid:
                continue
            msg, fds, _, _ = socket.recv_fds(conn, 65536, 3)
            argv, cwd = json.loads(msg)
            log.append(argv)
            try:
                status = _as_root(argv, cwd, fds, user)
            finally:
                for fd in fds:
                    os.close(fd)
            conn.sendall(str(status).encode())


def main(config_path: str) -> None:
    with open(config_path) as f:
        cfg = json.load(f)
    user = pwd.getpwnam(cfg["user"])
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "--bind", cfg["home"], user.pw_dir], check=True)
    subprocess.run(["mount", "--bind", cfg["usr_local_bin"], "/usr/local/bin"], check=True)
    if cfg.get("usr_local_man"):  # the man page goes there
        os.makedirs("/usr/local/share/man", exist_ok=True)
        subprocess.run(["mount", "--bind", cfg["usr_local_man"], "/usr/local/share/man"], check=True)

    server = socket.socket(socket.AF_UNIX)
    server.bind(cfg["sock"])
    os.chown(cfg["sock"], user.pw_uid, user.pw_gid)
    server.listen()
    sudo_log: list[list[str]] = []
    threading.Thread(target=serve_sudo, args=(server, user, sudo_log), daemon=True).start()

    results = []
    env = [f"HOME={user.pw_dir}", f"USER={user.pw_name}", f"LOGNAME={user.pw_name}", "SHELL=/bin/bash",
           "LANG=C.UTF-8", "TERM=dumb", "PATH=/usr/bin:/bin"]
    session = f"PATH={cfg['shim_dir']}:$PATH; cd; {cfg['session']}"
    r = subprocess.run(["runuser", "-u", user.pw_name, "--", "env", "-i", *env, "bash", "-lc", session],
                       cwd="/", capture_output=True, text=True, timeout=900)
    results.append({"cmd": cfg["session"], "rc": r.returncode, "out": r.stdout, "err": r.stderr, "sudo": sudo_log})
    for cmd in cfg["logins"]:
        r = subprocess.run(["runuser", "-l", user.pw_name, "-c", cmd], cwd="/", stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=300)
        results.append({"cmd": cmd, "rc": r.returncode, "out": r.stdout, "err": r.stderr})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
