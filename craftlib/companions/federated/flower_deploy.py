"""A Flower deployment started from Python: on this machine for the tests, with the same commands
across a network.

Two modes, and nothing in between:

- **secure** (the default, and the only one for a network): the SuperLink speaks TLS with a
  certificate from a private CA and admits only SuperNodes whose public key was registered
  (``--enable-supernode-auth``, then ``flwr supernode register``); each SuperNode checks the
  SuperLink's certificate and signs with its own key. Keys and certificates come from
  ``flower_keys``.
- **loopback only**: ``--insecure``, for a federation that never leaves one machine.
  ``superlink_args`` and
  ``supernode_args`` refuse ``--insecure`` with any address but 127.0.0.1.

Every listener binds an explicit address: the Fleet API where the sites dial (127.0.0.1 here), the
Control API (``flwr run``, ``flwr supernode register``) on 127.0.0.1 of the server only.
docs/SCALE.md gives the commands for a room of machines; ``run_local_deployment`` runs them on
127.0.0.1 (``tests/test_flower.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from .flower_keys import write_certificates, write_site_key

LOOPBACK = "127.0.0.1"
INTRUDERS = (
    "unregistered",
    "keyless",
)  # a SuperNode with a key nobody registered, and one with no key at all


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


FLOWER_ENTRY = {
    "superlink": "flwr.superlink.cli:flower_superlink",
    "supernode": "flwr.supernode.cli:flower_supernode",
}
# Flower 1.39's HEARTBEAT_DEFAULT_INTERVAL: a launched ServerApp/ClientApp must call in by then
CLAIM_WINDOW_S = 30


def flower_command(
    component: str, args: list[str], claim_window_s: float = CLAIM_WINDOW_S
) -> list[str]:
    """The command that starts a SuperLink or SuperNode; with a longer ``claim_window_s`` than
    Flower's 30 s.

    Flower hands each ServerApp/ClientApp process a task token that expires unless the process calls
    in within ``HEARTBEAT_DEFAULT_INTERVAL`` (30 s). On a loaded 2-core machine starting Python +
    Flower alone can take longer (we measured 20 s for ``import flwr.common.constant`` at nice 10
    under load 17), and the run then loops on ``Runtime task-token authentication failed``. So the
    process is started through a one-line launcher that sets that constant first; at 30 s it is the
    plain console script.
    """
    if claim_window_s == CLAIM_WINDOW_S:
        return [_bin(f"flower-{component}"), *args]
    module, func = FLOWER_ENTRY[component].split(":")
    code = (
        f"import sys, flwr.common.constant as c; c.HEARTBEAT_DEFAULT_INTERVAL = "
        f"{int(claim_window_s)}; "
        f"sys.argv[0] = 'flower-{component}'; from {module} import {func}; sys.exit({func}())"
    )
    return [sys.executable, "-c", code, *args]


def superlink_args(fleet: str, control_port: int, keys: str | Path | None = None) -> list[str]:
    """``flower-superlink`` arguments: Fleet API on ``fleet`` (host:port), Control API on
    127.0.0.1:``control_port``.

    With ``keys`` (a folder from ``flower_keys.write_certificates``): TLS and registered SuperNodes
    only. Without: ``--insecure``, which only a loopback ``fleet`` may use.
    """
    common = [
        "--disable-runtime-dependency-installation",
        "--fleet-api-address",
        fleet,
        "--host",
        LOOPBACK,
        "--port",
        str(control_port),
    ]
    if keys is None:
        _require_loopback(fleet)
        return ["--insecure", *common]
    keys = Path(keys)
    return [
        "--ssl-ca-certfile",
        str(keys / "ca.crt"),
        "--ssl-certfile",
        str(keys / "server.pem"),
        "--ssl-keyfile",
        str(keys / "server.key"),
        "--enable-supernode-auth",
        *common,
    ]


def supernode_args(
    superlink: str,
    port: int,
    partition: int,
    partitions: int,
    ca: str | Path | None = None,
    key: str | Path | None = None,
    max_wait_s: float | None = None,
) -> list[str]:
    """``flower-supernode`` arguments for site ``partition``: its runtime API on 127.0.0.1:``port``.

    With ``ca`` the SuperLink's certificate is checked against it, and ``key`` (OpenSSH private key)
    signs every request; without ``ca`` the link is ``--insecure``, which only a loopback
    ``superlink`` may use. ``max_wait_s`` makes a SuperNode that cannot connect give up instead of
    retrying forever.
    """
    node = [
        "--superlink",
        superlink,
        "--port",
        str(port),
        "--node-config",
        f"partition-id={partition} num-partitions={partitions}",
    ]
    if max_wait_s is not None:
        node += ["--max-retries", "1", "--max-wait-time", str(max_wait_s)]
    if ca is None:
        _require_loopback(superlink)
        return ["--insecure", *node]
    return [
        "--root-certificates",
        str(ca),
        *(["--auth-supernode-private-key", str(key)] if key else []),
        *node,
    ]


def _require_loopback(address: str) -> None:
    """``--insecure`` is refused for anything a second machine could reach."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host not in (LOOPBACK, "localhost", "::1"):
        raise ValueError(
            f"--insecure only on loopback, not {address}: on a network use TLS and registered "
            "SuperNodes (flower_keys; docs/SCALE.md)"
        )


def connection_config(control_port: int, ca: str | Path | None = None) -> str:
    """``$FLWR_HOME/config.toml`` for the ``flwr`` CLI: the SuperLink's Control API, checked against
    ``ca``."""
    trust = f'root-certificates = "{ca}"' if ca is not None else "insecure = true"
    return (
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = '
        f'"{LOOPBACK}:{control_port}"\n{trust}\n'
    )


def run_local_deployment(
    app: str | Path,
    clients: int,
    workdir: str | Path,
    timeout: float = 900,
    env: dict | None = None,
    claim_window_s: float = CLAIM_WINDOW_S,
    secure: bool = True,
    intruders: bool = False,
) -> dict:
    """Start a SuperLink and ``clients`` SuperNodes on 127.0.0.1, ``flwr run`` the app, stop
    everything.

    ``secure``: certificates and one key per site are made under ``workdir/keys``, the keys
    registered, and every link is TLS (the multi-site setup of docs/SCALE.md on one machine);
    otherwise ``--insecure`` on loopback. ``intruders`` (secure only): before the run, two more
    SuperNodes try to join — one with a key nobody registered, one with none — and must be turned
    away. Returns ports, wall time, each process's log and the intruders' exit codes. Raises
    ``RuntimeError`` with the logs' tails if anything fails or the run does not finish in
    ``timeout`` seconds. ``claim_window_s``: see ``flower_command`` (raise it on a loaded machine).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **(env or {}),
        "FLWR_HOME": str(workdir / "flwr_home"),
        "PYTHONUNBUFFERED": "1",
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    fleet, control = f"{LOOPBACK}:{free_port()}", free_port()
    keys = workdir / "keys" if secure else None
    ca = write_certificates(keys, [LOOPBACK])["ca"] if keys else None
    (workdir / "flwr_home").mkdir(exist_ok=True)
    (workdir / "flwr_home" / "config.toml").write_text(connection_config(control, ca))
    procs, logs = [], {}

    def start(name: str, args: list[str]) -> subprocess.Popen:
        logs[name] = workdir / f"{name}.log"
        procs.append(
            subprocess.Popen(
                args,
                stdout=open(logs[name], "w"),
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
                start_new_session=True,
            )
        )
        return procs[-1]

    def flwr(name: str, args: list[str], seconds: float) -> None:
        logs[name] = workdir / f"{name}.log"
        done = subprocess.run(
            [_bin("flwr"), *args],
            env=env,
            cwd=workdir,
            stdout=open(logs[name], "w"),
            stderr=subprocess.STDOUT,
            timeout=seconds,
        )
        if done.returncode != 0:
            raise RuntimeError(f"flwr {' '.join(args)} exited {done.returncode}\n{_tails(logs)}")

    started, turned_away = time.perf_counter(), {}
    try:
        start(
            "superlink",
            flower_command("superlink", superlink_args(fleet, control, keys), claim_window_s),
        )
        # slow starts on a loaded machine
        _wait_port(control, max(60.0, claim_window_s), procs[0], logs["superlink"])
        site_keys = (
            [write_site_key(keys / f"site{pid}")[0] for pid in range(clients)]
            if keys
            else [None] * clients
        )
        for pid, key in enumerate(k for k in site_keys if k is not None):
            flwr(f"register{pid}", ["supernode", "register", f"{key}.pub", "local"], 300)
        for pid, key in enumerate(site_keys):
            start(
                f"supernode{pid}",
                flower_command(
                    "supernode",
                    supernode_args(fleet, free_port(), pid, clients, ca, key),
                    claim_window_s,
                ),
            )
        if intruders and keys:
            turned_away = _intruders(
                start, fleet, ca, write_site_key(keys / "intruder")[0], clients
            )
        flwr("flwr-run", ["run", str(app), "local", "--stream"], timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"the deployment did not finish in {timeout:.0f} s\n{_tails(logs)}"
        ) from None
    finally:
        for p in reversed(procs):
            _stop(p)
    return {
        "ports": {"fleet": int(fleet.rsplit(":", 1)[1]), "runtime": control},
        "secure": secure,
        "seconds": time.perf_counter() - started,
        "logs": {k: str(v) for k, v in logs.items()},
        "intruders": turned_away,
    }


def _intruders(start, fleet: str, ca: Path, unregistered_key: Path, clients: int) -> dict[str, int]:
    """Start the ``INTRUDERS`` as sites of the federation; wait until they give up and return their
    exit codes."""
    keys = {"unregistered": unregistered_key, "keyless": None}
    procs = {
        name: start(
            f"intruder-{name}",
            flower_command(
                "supernode",
                supernode_args(fleet, free_port(), 0, clients, ca, keys[name], max_wait_s=30),
            ),
        )
        for name in INTRUDERS
    }
    return {name: p.wait(timeout=600) for name, p in procs.items()}


def _wait_port(port: int, seconds: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"superlink exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(
        f"nothing listens on 127.0.0.1:{port} after {seconds:.0f} s:\n{log.read_text()[-3000:]}"
    )


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``; Flower's SuperExec starts its own session, so a
    process-group signal would miss it). Empty where ``/proc`` is absent."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _stop(proc: subprocess.Popen) -> None:
    """Stop one process we started and every process it started, politely first."""
    import signal

    if proc.poll() is not None:
        return
    family = _descendants(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in [proc.pid, *family]:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=15)
            break
        except subprocess.TimeoutExpired:
            continue
    for pid in family:  # children that ignored SIGTERM
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _tails(logs: dict) -> str:
    return "\n".join(
        f"--- {name} ---\n{Path(path).read_text(errors='replace')[-2500:]}"
        for name, path in logs.items()
        if Path(path).exists()
    )
