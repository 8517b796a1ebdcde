"""A real OpenSSH sshd on 127.0.0.1 for the tests, with everything of its own.

`SshServer.start()` writes a host key, a client key, an sshd_config (its own port, pid
file and authorized_keys file; `UsePAM no`, `StrictModes no`, public keys only, root
allowed by key) and starts `sshd -D -e` as our child. The client side is one ssh_config
file (`ssh -F FILE ALIAS`): HostName, Port, User, IdentityFile, IdentitiesOnly,
UserKnownHostsFile with the host key already in it, BatchMode. OpenSSH reads ~/.ssh
from the password database, not $HOME, so nothing may rely on ~/.ssh.

The "remote host" is this machine: `SetEnv` in sshd_config puts the server's
`remote_bin` folder first on the PATH of every remote command (so a recording `docker`
script stands in for docker) and marks every remote process with ORCH_TEST_SSHD=<root>,
which is how `remote_processes()` finds what a session left running: sshd starts each
connection and each remote command in a new session, and a remote command outlives
the ssh client that started it (no pty: nothing sends it SIGHUP).

As root, sshd can log in any user (`login_user`, default: ourselves; an unprivileged
target user works too). Not as root, sshd can only log in ourselves.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from support import free_port
from support.unpriv import (
    User,
    current_user,
    is_root,
    kill_processes,
    marked_processes,
    public_tempdir,
    python_for,
    set_pdeathsig,
)

INSTALL_HINT = "apt-get install -y openssh-server"
MARK = "ORCH_TEST_SSHD"
ALIAS = "orch-staging"
_SBIN_PATH = "/usr/sbin:/usr/local/sbin:/sbin"


def find_sshd() -> str | None:
    """The sshd binary as an absolute path (sshd refuses to re-exec itself otherwise),
    when it and the client tools are installed."""
    path = f"{os.environ.get('PATH', '')}:{_SBIN_PATH}"
    sshd = shutil.which("sshd", path=path)
    if not sshd or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        return None
    return os.path.realpath(sshd)


def keygen(path: Path, comment: str) -> Path:
    """A new passphrase-less ed25519 key pair at `path` / `path`.pub."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f",
                    str(path)], check=True, capture_output=True, timeout=60)
    return path


_RECORDER = """\
#!{python}
# Stand-in for {name} on the test's "remote host": records its argv, then behaves as
# told by {name}.behaviour.json (exit code, stdout, stderr, seconds to sleep first).
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
entry = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "uid": os.getuid(), "pid": os.getpid(),
         "path": os.environ.get("PATH", "")}}
with open(os.path.join(here, "{name}.records.jsonl"), "a") as fh:
    fh.write(json.dumps(entry) + "\\n")
try:
    with open(os.path.join(here, "{name}.behaviour.json")) as fh:
        how = json.load(fh)
except FileNotFoundError:
    how = {{}}
sys.stdout.write(how.get("stdout", ""))
sys.stderr.write(how.get("stderr", ""))
sys.stdout.flush(); sys.stderr.flush()
time.sleep(how.get("sleep", 0))
sys.exit(how.get("exit", 0))
"""


def _sshd_config(root: Path, login_user: User, remote_bin: Path, *, port: int) -> str:
    """The server's whole configuration: nothing from /etc/ssh is read."""
    remote_path = f"{remote_bin}:/usr/local/bin:/usr/bin:/bin"
    return "\n".join([
        "ListenAddress 127.0.0.1",
        f"Port {port}",
        f"HostKey {root / 'host_ed25519_key'}",
        f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {login_user.name}",
        f"SetEnv PATH={remote_path} {MARK}={root}",
        "PermitUserEnvironment no",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "PrintMotd no",
        "PrintLastLog no",
        "MaxStartups 100:30:200",
        "LogLevel VERBOSE",
        "",
    ])


def client_config_text(*, port: int, user: str, identity: Path, known_hosts: Path,
                       alias: str = ALIAS) -> str:
    """An ssh_config for `ssh -F FILE ALIAS`: everything ssh needs, nothing from ~/.ssh."""
    return "\n".join([
        f"Host {alias}",
        "    HostName 127.0.0.1",
        f"    Port {port}",
        f"    User {user}",
        f"    IdentityFile {identity}",
        "    IdentitiesOnly yes",
        "    IdentityAgent none",
        f"    UserKnownHostsFile {known_hosts}",
        "    GlobalKnownHostsFile /dev/null",
        "    StrictHostKeyChecking yes",
        "    UpdateHostKeys no",
        "    BatchMode yes",
        "    PasswordAuthentication no",
        "    KbdInteractiveAuthentication no",
        "    ConnectTimeout 10",
        "    LogLevel ERROR",
        "",
    ])


class SshServerError(RuntimeError):
    """sshd could not start; the message has its log's tail."""


class SshServer:
    """One sshd with its own files under /tmp. `start()`, then `ssh_argv(...)` or
    `ssh_options` + `alias` for a client, `install_recorder("docker")` + `records()`
    for the remote side, `remote_processes()` / `kill_remote()`; `stop()` at the end."""

    def __init__(self, *, login_user: User | None = None, client_user: User | None = None,
                 alias: str = ALIAS) -> None:
        sshd = find_sshd()
        if sshd is None:
            raise SshServerError(f"sshd or the ssh client is missing ({INSTALL_HINT})")
        me = current_user()
        self.sshd = sshd
        self.login_user = login_user or me
        self.client_user = client_user or me
        if not is_root() and {self.login_user.uid, self.client_user.uid} != {me.uid}:
            raise SshServerError("not root: sshd can only log in the user it runs as")
        self.alias = alias
        self.root = public_tempdir("orch-sshd-")
        self.remote_bin = self.root / "remote-bin"
        self.client_dir = self.root / "client"
        self.ssh_config = self.client_dir / "ssh_config"
        self.identity = self.client_dir / "id_ed25519"
        self.known_hosts = self.client_dir / "known_hosts"
        self.logfile = self.root / "sshd.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    # -- the client side ---------------------------------------------------------------
    @property
    def ssh_options(self) -> list[str]:
        """What orch's `staging.ssh_options` needs; the host is `self.alias`."""
        return ["-F", str(self.ssh_config)]

    def ssh_argv(self, *remote: str, config: Path | None = None) -> list[str]:
        """`ssh -F CONFIG ALIAS -- REMOTE...`. The remote side joins REMOTE with spaces
        and hands it to the login shell: quote it yourself (shlex.join) for exact argv."""
        return ["ssh", "-F", str(config or self.ssh_config), self.alias, "--", *remote]

    def client_config(self, name: str, *, identity: Path | None = None,
                      port: int | None = None) -> Path:
        """Another ssh_config for the same alias, e.g. with a wrong key or a closed port."""
        path = self.client_dir / name
        path.write_text(client_config_text(
            port=port or self.port, user=self.login_user.name, identity=identity or
            self.identity, known_hosts=self.known_hosts, alias=self.alias), encoding="utf-8")
        self._give_client(path)
        return path

    def wrong_key_config(self) -> Path:
        """A config whose key the server does not know: `Permission denied (publickey)`."""
        other = self.client_dir / "wrong_ed25519"
        if not other.exists():
            keygen(other, "orch-test-wrong")
            self._give_client(other)
        return self.client_config("ssh_config_wrong_key", identity=other)

    def refused_config(self) -> Path:
        """A config for a loopback port nobody listens on: `Connection refused`."""
        return self.client_config("ssh_config_refused", port=free_port())

    # -- the remote side ---------------------------------------------------------------
    def install_recorder(self, name: str = "docker", **behaviour: Any) -> Path:
        """Put a recording `name` script first on the remote PATH (see _RECORDER);
        `behaviour` as in `set_behaviour`."""
        script = self.remote_bin / name
        script.write_text(_RECORDER.format(python=python_for(self.login_user), name=name),
                          encoding="utf-8")
        script.chmod(0o755)
        self.set_behaviour(name, **behaviour)
        return script

    def set_behaviour(self, name: str = "docker", *, exit: int = 0, stdout: str = "",
                      stderr: str = "", sleep: float = 0) -> None:
        """What the recorder does on its next calls: print, sleep, exit with a code."""
        path = self.remote_bin / f"{name}.behaviour.json"
        path.write_text(json.dumps({"exit": exit, "stdout": stdout, "stderr": stderr,
                                    "sleep": sleep}), encoding="utf-8")
        path.chmod(0o644)

    def records(self, name: str = "docker") -> list[dict[str, Any]]:
        """One dict per call of the recorder: argv (without the program), cwd, uid, pid,
        PATH."""
        path = self.remote_bin / f"{name}.records.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    def reset(self) -> None:
        """Forget records and behaviours, kill what remote commands left running."""
        self.kill_remote()
        for path in self.remote_bin.glob("*.records.jsonl"):
            path.unlink()
        for path in self.remote_bin.glob("*.behaviour.json"):
            path.write_text("{}", encoding="utf-8")

    def remote_processes(self) -> list[psutil.Process]:
        """The processes that remote commands of this server started and left alive."""
        return marked_processes(MARK, str(self.root))

    def kill_remote(self) -> None:
        kill_processes(self.remote_processes())

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, attempts: int = 5) -> SshServer:
        """Write keys and configs, start sshd on a free port (another one when the port
        was taken meanwhile), wait until it accepts connections."""
        self._prepare()
        atexit.register(self.stop)
        for _ in range(attempts):
            self.port = free_port()
            if self._launch():
                return self
        raise SshServerError(f"sshd did not start after {attempts} ports:\n{self.log_tail()}")

    def _prepare(self) -> None:
        host_key = keygen(self.root / "host_ed25519_key", "orch-test-host")
        self.client_dir.mkdir()
        keygen(self.identity, "orch-test-client")
        (self.root / "authorized_keys").write_text(
            Path(f"{self.identity}.pub").read_text(encoding="utf-8"), encoding="utf-8")
        (self.root / "authorized_keys").chmod(0o644)
        self.remote_bin.mkdir(mode=0o755)
        if is_root():
            os.chown(self.remote_bin, self.login_user.uid, self.login_user.gid)
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self._host_pub = Path(f"{host_key}.pub").read_text(encoding="utf-8").split()[:2]

    def _launch(self, timeout: float = 30) -> bool:
        """Start sshd on self.port; True once it accepts connections, False when the port
        was taken."""
        config = self.root / "sshd_config"
        config.write_text(_sshd_config(self.root, self.login_user, self.remote_bin,
                                       port=self.port), encoding="utf-8")
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(self._host_pub)}\n",
                                    encoding="utf-8")
        self.client_config("ssh_config")
        self._give_client(self.client_dir)
        log = open(self.logfile, "ab")  # noqa: SIM115 - the child keeps it open
        try:
            self._proc = subprocess.Popen(
                [self.sshd, "-D", "-e", "-f", str(config)], cwd="/", stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=set_pdeathsig(signal.SIGTERM))
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                if "Address already in use" in self.log_tail():
                    return False
                raise SshServerError(f"sshd exited {self._proc.returncode}:\n{self.log_tail()}")
            if f"listening on 127.0.0.1 port {self.port}" in self.log_tail() and self._accepts():
                return True
            time.sleep(0.05)
        raise SshServerError(f"sshd not listening after {timeout}s:\n{self.log_tail()}")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                return True
        except OSError:
            return False

    def _give_client(self, path: Path) -> None:
        """Client files belong to the client user; ssh refuses a key others can read."""
        if is_root():
            for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
                os.chown(item, self.client_user.uid, self.client_user.gid)
        for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
            if item.is_file():
                item.chmod(0o600 if not item.name.endswith(".pub") else 0o644)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill what remote commands left, stop sshd and its connection processes, remove
        the folder (kept when ORCH_TEST_KEEP is set). Safe to call twice."""
        atexit.unregister(self.stop)
        self.kill_remote()
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            kill_processes(children)
        if not os.environ.get("ORCH_TEST_KEEP"):
            shutil.rmtree(self.root, ignore_errors=True)
