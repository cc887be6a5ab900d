"""Flower adapter: ``federated``'s plain functions as a Flower ``ServerApp``, ``ClientApp`` and ``Strategy``.

Needs the optional extra (``pip install 'craftlib[federated]'``, Flower ``flwr`` 1.39). Nothing here
trains differently from ``federated.run``: the ``ClientApp`` calls ``federated.client_round`` and
keeps the client's private state (head, optimizer, schedule) in Flower's ``context.state``; the
``Strategy`` calls ``federated.Server``. So for the same seed, thread count and configuration, the
global model of a real deployment equals the in-process one, bit for bit (``tests/test_flower.py``).

A real deployment on one machine (``run_local_deployment`` does exactly this and the test calls it):

    flower-superlink --insecure        # the server: Fleet API (gRPC) on :9092, runtime/control API (HTTP) on :8000
    flower-supernode --insecure --superlink 127.0.0.1:9092 --node-config "partition-id=0 num-partitions=2"
    flower-supernode ... --node-config "partition-id=1 num-partitions=2"   # one per site
    flwr run APP_DIR local                                        # APP_DIR from write_app_dir()

Flower 1.39 is the last release whose SuperNode <-> SuperLink link (the Fleet API) is gRPC; from 1.40
it is HTTP. The CLI's Control API (``flwr run`` -> SuperLink) is HTTP in 1.39 already.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import federated
from .data import LFW, FaceSet, load_faces
from .recipes import Recipe

try:
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import Strategy
except ImportError as err:  # the core workshop does not need Flower
    raise ImportError("craftlib.flower_app needs Flower: pip install 'craftlib[federated]'") from err

RECIPES = {"federated": federated.FEDERATED, "fast": federated.FEDERATED_FAST}
CONFIG_KEYS = ("strategy", "split", "craft", "clients", "identities", "public", "alpha", "min_identities", "rounds",
               "local_epochs", "negatives_k", "negatives_source", "seed")


# ---------------------------------------------------------------------------------------------
# run configuration <-> (recipe, FedConfig)


def run_config(recipe: str, fed: federated.FedConfig, out: str | Path, threads: int = 1, evaluate: bool = True) -> dict:
    """The Flower run config (``[tool.flwr.app.config]``) for a recipe name and a ``FedConfig``."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    if fed.strategy not in ("fedavg", "adafedfr"):
        raise ValueError(f"Flower runs fedavg or adafedfr; {fed.strategy!r} needs no federation (use federated.run)")
    return {"recipe": recipe, **{k: getattr(fed, k) for k in CONFIG_KEYS}, "out": str(out), "threads": threads,
            "evaluate": evaluate}


def settings(config) -> tuple[Recipe, federated.FedConfig]:
    fed = federated.FedConfig(**{k: type(getattr(federated.FedConfig(), k))(config[k]) for k in CONFIG_KEYS if k in config})
    return RECIPES[str(config.get("recipe", "federated"))], fed


def _threads(config) -> None:
    import torch

    torch.set_num_threads(int(config.get("threads", 1)))


# ---------------------------------------------------------------------------------------------
# each site reads only its own faces


def site_identities(lfw: LFW, fed: federated.FedConfig) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Identity names in ``LFW.training_set`` order, the partition of the client ones, and the public ones."""
    banned = lfw.pair_identities("devtest")
    names = [n for n, f in lfw.people.items() if len(f) >= 2 and n not in banned][: fed.identities + fed.public]
    parts = federated.partition(fed.identities, fed.clients, fed.split, fed.alpha, fed.seed, fed.min_identities)
    return names[: fed.identities], parts, names[fed.identities:]


def faces_of(lfw: LFW, names: list[str]) -> FaceSet:
    """The faces of these people only (nobody else's file is opened), labelled in the order given."""
    files = [f"{n}/{img}" for n in names for img in lfw.people[n]]
    labels = np.array([i for i, n in enumerate(names) for _ in lfw.people[n]], dtype=np.int64)
    return FaceSet(load_faces(lfw.image_root, files, lfw.crop, lfw.size), labels, list(names), files)


def site_faces(lfw: LFW, fed: federated.FedConfig, partition_id: int) -> FaceSet:
    """Client ``partition_id``'s faces, identical to ``federated.federation(...).clients[partition_id]``."""
    names, parts, _ = site_identities(lfw, fed)
    return faces_of(lfw, [names[i] for i in parts[partition_id]])


# ---------------------------------------------------------------------------------------------
# payloads <-> Flower records


def _arrays(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def to_records(message: dict, round_: int) -> RecordDict:
    """A server->client payload of ``federated.Server.message`` as a Flower ``RecordDict``."""
    content = RecordDict({"config": ConfigRecord({"server-round": round_, "renewed": [int(r) for r in message["renewed"]],
                                                  "want-means": bool(message.get("want_means", False))})})
    if message.get("arrays") is not None:
        content["arrays"] = _arrays(message["arrays"])
    if message.get("negatives") is not None:
        content["negatives"] = _arrays({"negatives": message["negatives"]})
    return content


def from_records(content: RecordDict) -> dict:
    config = content["config"]
    return {"arrays": _numpy(content["arrays"]) if "arrays" in content else None,
            "renewed": list(config["renewed"]), "want_means": bool(config["want-means"]),
            "negatives": content["negatives"]["negatives"].numpy() if "negatives" in content else None}


def reply_records(reply: dict, partition_id: int) -> RecordDict:
    content = RecordDict({
        "arrays": _arrays(reply["arrays"]),
        "metrics": MetricRecord({"num-examples": reply["num_examples"], "partition-id": partition_id,
                                 "train_loss": reply["train_loss"], "train_acc": reply["train_acc"],
                                 "silent_fraction": reply["silent_fraction"], "resumed": int(reply.get("resumed", 0))}),
        "info": ConfigRecord({"renewed": [int(r) for r in reply["renewed"]]})})
    if "class_means" in reply:
        content["class_means"] = _arrays({"class_means": reply["class_means"]})
    return content


def reply_from_records(content: RecordDict) -> tuple[int, dict]:
    metrics = content["metrics"]
    reply = {"arrays": _numpy(content["arrays"]), "num_examples": int(metrics["num-examples"]),
             "train_loss": float(metrics["train_loss"]), "train_acc": float(metrics["train_acc"]),
             "silent_fraction": float(metrics["silent_fraction"]), "renewed": list(content["info"]["renewed"]),
             "resumed": bool(metrics.get("resumed", 0))}
    if "class_means" in content:
        reply["class_means"] = content["class_means"]["class_means"].numpy()
    return int(metrics["partition-id"]), reply


# ---------------------------------------------------------------------------------------------
# ClientApp


client_app = ClientApp()
STATE_KEY = "craftlib-client"


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    """One site's round: its own faces, its private state from ``context.state``, the server's message."""
    _threads(context.run_config)
    recipe, fed = settings(context.run_config)
    pid = int(context.node_config["partition-id"])
    data = site_faces(LFW(size=recipe.train.model.input_size, download=False), fed, pid)
    blob = context.state[STATE_KEY]["blob"].numpy().tobytes() if STATE_KEY in context.state else None
    seed = fed.seed * 1000 + pid
    reply, blob = federated.client_round(data, blob, from_records(msg.content), recipe, fed, seed, seed + 7)
    reply["resumed"] = STATE_KEY in context.state  # this site's private state came back from the last round
    context.state[STATE_KEY] = ArrayRecord({"blob": Array(np.frombuffer(blob, dtype=np.uint8).copy())})
    return Message(reply_records(reply, pid), reply_to=msg)


# ---------------------------------------------------------------------------------------------
# Strategy and ServerApp


class CraftStrategy(Strategy):
    """FedAvg / AdaFedFR-style with server-side CRAFT: ``federated.Server`` behind Flower's Strategy API.

    Every connected node trains every round. Replies are ordered by partition id before averaging, so
    the float64 sums run in the same order as in ``federated.run``.
    """

    def __init__(self, server: federated.Server, wait_s: float = 120.0, out: Path | None = None):
        self.server, self.wait_s, self.out = server, wait_s, out
        self.partition_of: dict[int, int] = {}
        self.sent: list[dict] = []  # what crossed to the clients (numpy payloads), for inspection

    def _nodes(self, grid: Grid) -> list[int]:
        deadline = time.time() + self.wait_s
        while True:
            nodes = sorted(grid.get_node_ids())
            if len(nodes) >= self.server.fed.clients or time.time() > deadline:
                return nodes
            time.sleep(0.5)

    def configure_train(self, server_round, arrays, config, grid):
        messages = []
        for node in self._nodes(grid):
            payload = self.server.message(self.partition_of.get(node, -1))
            self.sent.append({"round": server_round, "node": node, "keys": sorted(k for k, v in payload.items() if v is not None)})
            messages.append(Message(to_records(payload, server_round), dst_node_id=node, message_type=MessageType.TRAIN))
        return messages

    def aggregate_train(self, server_round, replies):
        received = []
        for msg in replies:
            if msg.has_error():
                raise RuntimeError(f"client on node {msg.metadata.src_node_id} failed: {msg.error}")
            pid, reply = reply_from_records(msg.content)
            self.partition_of[msg.metadata.src_node_id] = pid
            received.append((pid, reply))
        record = self.server.finish_round(server_round, [r for _, r in sorted(received, key=lambda x: x[0])])
        if self.out is not None:  # every round's global model, to compare with federated.run round by round
            np.savez(self.out / f"global_round{server_round}.npz", **federated.arrays_of(self.server.model))
        metrics = {"silent_fraction": record["global_silent_fraction"]}
        if record.get("global"):
            metrics["accuracy"] = record["global"]["accuracy"]
        return _arrays(federated.arrays_of(self.server.model)), MetricRecord(metrics)

    def configure_evaluate(self, server_round, arrays, config, grid):
        return []  # the server verifies the global model on DevTest itself (finish_round)

    def aggregate_evaluate(self, server_round, replies):
        return None

    def summary(self) -> None:
        pass


server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    """The federation's server: public faces and DevTest only; writes the final model and history to ``out``."""
    _threads(context.run_config)
    recipe, fed = settings(context.run_config)
    lfw = LFW(size=recipe.train.model.input_size, download=False)
    _, _, public_names = site_identities(lfw, fed)
    pairs = lfw.pairs("devtest") if context.run_config.get("evaluate", True) else None
    server = federated.Server(recipe, fed, faces_of(lfw, public_names), pairs)
    out = Path(str(context.run_config["out"]))
    out.mkdir(parents=True, exist_ok=True)
    strategy = CraftStrategy(server, out=out)
    strategy.start(grid, _arrays(federated.arrays_of(server.model)), num_rounds=fed.rounds, timeout=3600)
    np.savez(out / "global_model.npz", **federated.arrays_of(server.model))
    (out / "history.json").write_text(json.dumps({"rounds": server.history, "sent": strategy.sent}))


# ---------------------------------------------------------------------------------------------
# a real deployment on this machine: SuperLink + SuperNodes over 127.0.0.1


APP_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "craftlib-federated"
version = "1.0.0"
description = "craftlib's federated face recognition (FedAvg / AdaFedFR-style, CRAFT on the server)"
license = "MIT"
dependencies = []

[tool.flwr.app]
publisher = "craftlib"

[tool.flwr.app.components]
serverapp = "craftlib.flower_app:server_app"
clientapp = "craftlib.flower_app:client_app"

[tool.flwr.app.config]
{config}
"""


def _toml_value(value) -> str:
    return json.dumps(value) if not isinstance(value, bool) else ("true" if value else "false")


def write_app_dir(path: str | Path, config: dict) -> Path:
    """A Flower App folder (only a ``pyproject.toml``: the code is the installed craftlib) for ``flwr run``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"{k} = {_toml_value(v)}" for k, v in config.items())
    (path / "pyproject.toml").write_text(APP_PYPROJECT.format(config=body))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


FLOWER_ENTRY = {"superlink": "flwr.superlink.cli:flower_superlink", "supernode": "flwr.supernode.cli:flower_supernode"}
CLAIM_WINDOW_S = 30  # Flower 1.39's HEARTBEAT_DEFAULT_INTERVAL: a launched ServerApp/ClientApp must call in by then


def flower_command(component: str, args: list[str], claim_window_s: float = CLAIM_WINDOW_S) -> list[str]:
    """The command that starts a SuperLink or SuperNode; with a longer ``claim_window_s`` than Flower's 30 s.

    Flower hands each ServerApp/ClientApp process a task token that expires unless the process calls in
    within ``HEARTBEAT_DEFAULT_INTERVAL`` (30 s). On a loaded 2-core machine starting Python + Flower alone
    can take longer (we measured 20 s for ``import flwr.common.constant`` at nice 10 under load 17), and the
    run then loops on ``Runtime task-token authentication failed``. So the process is started through a
    one-line launcher that sets that constant first; at 30 s it is the plain console script.
    """
    if claim_window_s == CLAIM_WINDOW_S:
        return [_bin(f"flower-{component}"), *args]
    module, func = FLOWER_ENTRY[component].split(":")
    code = (f"import sys, flwr.common.constant as c; c.HEARTBEAT_DEFAULT_INTERVAL = {int(claim_window_s)}; "
            f"sys.argv[0] = 'flower-{component}'; from {module} import {func}; sys.exit({func}())")
    return [sys.executable, "-c", code, *args]


def run_local_deployment(app: str | Path, clients: int, workdir: str | Path, timeout: float = 900,
                         env: dict | None = None, claim_window_s: float = CLAIM_WINDOW_S) -> dict:
    """Start a SuperLink and ``clients`` SuperNodes on 127.0.0.1, ``flwr run`` the app, stop everything.

    Returns the ports, the wall time and the path of each process's log. Raises ``RuntimeError`` with
    the logs' tails if the run does not finish in ``timeout`` seconds. ``claim_window_s``: see
    ``flower_command`` (raise it on a loaded machine).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env or {}), "FLWR_HOME": str(workdir / "flwr_home"), "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    fleet, control = free_port(), free_port()
    (workdir / "flwr_home").mkdir(exist_ok=True)
    (workdir / "flwr_home" / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{control}"\ninsecure = true\n')
    procs, logs = [], {}

    def start(name: str, args: list[str]) -> None:
        logs[name] = workdir / f"{name}.log"
        procs.append(subprocess.Popen(args, stdout=open(logs[name], "w"), stderr=subprocess.STDOUT, env=env,
                                      cwd=workdir, start_new_session=True))

    start("superlink", flower_command("superlink", [
        "--insecure", "--disable-runtime-dependency-installation", "--fleet-api-address", f"127.0.0.1:{fleet}",
        "--host", "127.0.0.1", "--port", str(control)], claim_window_s))
    for pid in range(clients):
        start(f"supernode{pid}", flower_command("supernode", [
            "--insecure", "--superlink", f"127.0.0.1:{fleet}", "--port", str(free_port()),
            "--node-config", f"partition-id={pid} num-partitions={clients}"], claim_window_s))
    started = time.perf_counter()
    try:
        _wait_port(control, max(60.0, claim_window_s), procs[0], logs["superlink"])  # slow starts on a loaded machine
        logs["flwr-run"] = workdir / "flwr-run.log"
        done = subprocess.run([_bin("flwr"), "run", str(app), "local", "--stream"], env=env, cwd=workdir,
                              stdout=open(logs["flwr-run"], "w"), stderr=subprocess.STDOUT, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"flwr run exited {done.returncode}\n{_tails(logs)}")
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the deployment did not finish in {timeout:.0f} s\n{_tails(logs)}") from None
    finally:
        for p in reversed(procs):
            _stop(p)
    return {"ports": {"fleet": fleet, "runtime": control},
            "seconds": time.perf_counter() - started, "logs": {k: str(v) for k, v in logs.items()}}


def _wait_port(port: int, seconds: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"superlink exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds:.0f} s:\n{log.read_text()[-3000:]}")


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
    return "\n".join(f"--- {name} ---\n{Path(path).read_text(errors='replace')[-2500:]}"
                     for name, path in logs.items() if Path(path).exists())
