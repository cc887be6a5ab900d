"""Flower adapter: ``federated``'s plain functions as a Flower ``ServerApp``, ``ClientApp`` and
``Strategy``.

Needs the optional extra (``pip install 'craftlib[federated]'``, Flower ``flwr`` 1.39). Nothing here
trains differently from ``federated.run``: the ``ClientApp`` calls ``federated.client_round`` and
keeps the client's private state (head, optimizer, schedule) in Flower's ``context.state``; the
``Strategy`` calls ``federated.Server``. So for the same seed, thread count and configuration, the
global model of a real deployment equals the in-process one, bit for bit (``tests/test_flower.py``).

A deployment is a SuperLink (the server) and one SuperNode per site; ``flower_deploy`` starts them,
and ``flwr run APP_DIR`` (``write_app_dir``) submits this app. Across a network every link is TLS
and only registered SuperNodes may join (``flower_keys`` makes the certificates and keys;
docs/SCALE.md has the commands, and ``flower_deploy.run_local_deployment`` runs exactly that setup
on 127.0.0.1). ``--insecure`` is for a federation that never leaves one machine, on 127.0.0.1 only.

Nothing a site sends is trusted: every reply crosses ``federated.Channel`` and is judged by
``federated.Server`` (fields, shapes, dtypes, finite values, counts within what the site was dealt);
a bad one is refused with a logged reason and the round aggregates without it.

Flower 1.39 is the last release whose SuperNode <-> SuperLink link (the Fleet API) is gRPC; from
1.40 it is HTTP. The CLI's Control API (``flwr run`` -> SuperLink) is HTTP in 1.39 already.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from craftlib.data import LFW, FaceSet, load_faces
from craftlib.recipes import Recipe

from . import federation as federated

try:
    from flwr.app import (
        Array,
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        MessageType,
        MetricRecord,
        RecordDict,
    )
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import Strategy
except ImportError as err:  # the core workshop does not need Flower
    raise ImportError(
        "craftlib.companions.federated.flower_app needs Flower: pip install 'craftlib[federated]'"
    ) from err

RECIPES = {"federated": federated.FEDERATED, "fast": federated.FEDERATED_FAST}
CONFIG_KEYS = (
    "strategy",
    "split",
    "craft",
    "clients",
    "identities",
    "public",
    "alpha",
    "min_identities",
    "rounds",
    "local_epochs",
    "negatives_k",
    "negatives_source",
    "seed",
)


# ---------------------------------------------------------------------------------------------
# run configuration <-> (recipe, FedConfig)


def run_config(
    recipe: str, fed: federated.FedConfig, out: str | Path, threads: int = 1, evaluate: bool = True
) -> dict:
    """The Flower run config (``[tool.flwr.app.config]``) for a recipe name and a ``FedConfig``."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    if fed.strategy not in ("fedavg", "adafedfr"):
        raise ValueError(
            f"Flower runs fedavg or adafedfr; {fed.strategy!r} needs no federation (use "
            f"federated.run)"
        )
    return {
        "recipe": recipe,
        **{k: getattr(fed, k) for k in CONFIG_KEYS},
        "out": str(out),
        "threads": threads,
        "evaluate": evaluate,
    }


def settings(config) -> tuple[Recipe, federated.FedConfig]:
    fed = federated.FedConfig(
        **{
            k: type(getattr(federated.FedConfig(), k))(config[k])
            for k in CONFIG_KEYS
            if k in config
        }
    )
    return RECIPES[str(config.get("recipe", "federated"))], fed


def _threads(config) -> None:
    import torch

    torch.set_num_threads(int(config.get("threads", 1)))


# ---------------------------------------------------------------------------------------------
# each site reads only its own faces


def site_identities(
    lfw: LFW, fed: federated.FedConfig
) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Identity names in ``LFW.training_set`` order, the partition of the client ones, and the
    public ones."""
    banned = lfw.pair_identities("devtest")
    names = [n for n, f in lfw.people.items() if len(f) >= 2 and n not in banned][
        : fed.identities + fed.public
    ]
    parts = federated.partition(
        fed.identities, fed.clients, fed.split, fed.alpha, fed.seed, fed.min_identities
    )
    return names[: fed.identities], parts, names[fed.identities :]


def faces_of(lfw: LFW, names: list[str]) -> FaceSet:
    """The faces of these people only (nobody else's file is opened), labelled in the order
    given."""
    files = [f"{n}/{img}" for n in names for img in lfw.people[n]]
    labels = np.array([i for i, n in enumerate(names) for _ in lfw.people[n]], dtype=np.int64)
    return FaceSet(
        load_faces(lfw.image_root, files, lfw.crop, lfw.size), labels, list(names), files
    )


def assigned_sizes(lfw: LFW, fed: federated.FedConfig) -> list[tuple[int, int]]:
    """``(identities, faces)`` the server dealt each site, from the folder listing (no face is
    opened)."""
    names, parts, _ = site_identities(lfw, fed)
    return [(len(part), sum(len(lfw.people[names[i]]) for i in part)) for part in parts]


def site_faces(lfw: LFW, fed: federated.FedConfig, partition_id: int) -> FaceSet:
    """Client ``partition_id``'s faces, identical to
    ``federated.federation(...).clients[partition_id]``."""
    names, parts, _ = site_identities(lfw, fed)
    return faces_of(lfw, [names[i] for i in parts[partition_id]])


# ---------------------------------------------------------------------------------------------
# payloads <-> Flower records


def _arrays(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """Arrays as sent, 0-d ones included (``np.ascontiguousarray`` would make them 1-d: the server
    refuses that)."""
    return ArrayRecord({k: Array(np.require(v, requirements="C")) for k, v in arrays.items()})


def _numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def to_records(message: dict, round_: int) -> RecordDict:
    """A server->client payload of ``federated.Server.message`` as a Flower ``RecordDict``."""
    content = RecordDict(
        {
            "config": ConfigRecord(
                {
                    "server-round": round_,
                    "renewed": [int(r) for r in message["renewed"]],
                    "want-means": bool(message.get("want_means", False)),
                }
            )
        }
    )
    if message.get("arrays") is not None:
        content["arrays"] = _arrays(message["arrays"])
    if message.get("negatives") is not None:
        content["negatives"] = _arrays({"negatives": message["negatives"]})
    return content


def from_records(content: RecordDict) -> dict:
    config = content["config"]
    return {
        "arrays": _numpy(content["arrays"]) if "arrays" in content else None,
        "renewed": list(config["renewed"]),
        "want_means": bool(config["want-means"]),
        "negatives": content["negatives"]["negatives"].numpy() if "negatives" in content else None,
    }


def reply_records(reply: dict, partition_id: int) -> RecordDict:
    content = RecordDict(
        {
            "arrays": _arrays(reply["arrays"]),
            "metrics": MetricRecord(
                {
                    "num-examples": reply["num_examples"],
                    "partition-id": partition_id,
                    "train_loss": reply["train_loss"],
                    "train_acc": reply["train_acc"],
                    "silent_fraction": reply["silent_fraction"],
                    "resumed": int(reply.get("resumed", 0)),
                }
            ),
            "info": ConfigRecord({"renewed": [int(r) for r in reply["renewed"]]}),
        }
    )
    if "class_means" in reply:
        content["class_means"] = _arrays({"class_means": reply["class_means"]})
    return content


def reply_from_records(content: RecordDict) -> tuple[int, dict]:
    """A client's ``RecordDict`` as ``(partition id, reply)``; values are passed on as sent, for the
    server to judge.

    Raises ``KeyError`` or ``TypeError`` when the records are not a reply's at all.
    """
    metrics = content["metrics"]
    reply = {
        "arrays": _numpy(content["arrays"]),
        "num_examples": metrics["num-examples"],
        "train_loss": metrics["train_loss"],
        "train_acc": metrics["train_acc"],
        "silent_fraction": metrics["silent_fraction"],
        "renewed": list(content["info"]["renewed"]),
        "resumed": bool(metrics.get("resumed", 0)),
    }
    if "class_means" in content:
        reply["class_means"] = content["class_means"]["class_means"].numpy()
    return metrics["partition-id"], reply


# ---------------------------------------------------------------------------------------------
# ClientApp


client_app = ClientApp()
STATE_KEY = "craftlib-client"


@client_app.train()
def client_train(msg: Message, context: Context) -> Message:
    """One site's round: its own faces, its private state from ``context.state``, the server's
    message."""
    _threads(context.run_config)
    recipe, fed = settings(context.run_config)
    pid = int(context.node_config["partition-id"])
    data = site_faces(LFW(size=recipe.train.model.input_size, download=False), fed, pid)
    blob = (
        context.state[STATE_KEY]["blob"].numpy().tobytes() if STATE_KEY in context.state else None
    )
    seed = fed.seed * 1000 + pid
    reply, blob = federated.client_round(
        data, blob, from_records(msg.content), recipe, fed, seed, seed + 7
    )
    # this site's private state came back from the last round
    reply["resumed"] = STATE_KEY in context.state
    context.state[STATE_KEY] = ArrayRecord(
        {"blob": Array(np.frombuffer(blob, dtype=np.uint8).copy())}
    )
    # no face leaves
    federated.Channel(data.images.shape[1:], keep_log=False).send(f"site {pid}", "server", reply)
    return Message(reply_records(reply, pid), reply_to=msg)


# ---------------------------------------------------------------------------------------------
# Strategy and ServerApp


class CraftStrategy(Strategy):
    """FedAvg / AdaFedFR-style with server-side CRAFT: ``federated.Server`` behind Flower's Strategy
    API.

    Every connected node trains every round. Replies are ordered by partition id before averaging,
    so the float64 sums run in the same order as in ``federated.run``. Every payload crosses the
    same boundary as in-process (``federated.Channel``), and every reply is judged by the same
    ``Server``: a failed, malformed or dishonest reply (or a node claiming another node's site) is
    refused with a logged reason, not averaged.
    """

    def __init__(self, server: federated.Server, wait_s: float = 120.0, out: Path | None = None):
        self.server, self.wait_s, self.out = server, wait_s, out
        self.channel = federated.Channel(server.public.images.shape[1:], keep_log=False)
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
            payload = self.channel.send(
                "server", f"node {node}", self.server.message(self.partition_of.get(node, -1))
            )
            self.sent.append(
                {
                    "round": server_round,
                    "node": node,
                    "keys": sorted(k for k, v in payload.items() if v is not None),
                }
            )
            messages.append(
                Message(
                    to_records(payload, server_round),
                    dst_node_id=node,
                    message_type=MessageType.TRAIN,
                )
            )
        return messages

    def _receive(self, server_round: int, msg: Message) -> tuple[int, dict] | None:
        """One node's reply as ``(site, reply)`` once it crossed the boundary, or ``None`` (refused,
        logged)."""
        node = msg.metadata.src_node_id
        try:
            if msg.has_error():
                raise federated.BoundaryError(
                    f"its ClientApp failed (code {msg.error.code}): {msg.error.reason}"
                )
            pid, reply = reply_from_records(msg.content)
            self.channel.send(f"node {node}", "server", reply)
        except KeyError as err:
            self.server.refuse(
                server_round, f"on node {node}", f"its records are not a reply (no {err})"
            )
            return None
        except (federated.BoundaryError, TypeError, ValueError) as err:
            self.server.refuse(server_round, f"on node {node}", str(err) or type(err).__name__)
            return None
        if self.partition_of.setdefault(node, pid) != pid:
            self.server.refuse(
                server_round,
                f"on node {node}",
                f"it answered for site {self.partition_of[node]} before, now for site {pid!r}",
            )
            return None
        return pid, reply

    def aggregate_train(self, server_round, replies):
        received = [
            r for r in (self._receive(server_round, msg) for msg in replies) if r is not None
        ]
        # a non-integer site is refused next
        received.sort(key=lambda x: x[0] if isinstance(x[0], int) else -1)
        record = self.server.finish_round(
            server_round, [r for _, r in received], [pid for pid, _ in received]
        )
        # every round's global model, to compare with federated.run round by round
        if self.out is not None:
            np.savez(
                self.out / f"global_round{server_round}.npz",
                **federated.arrays_of(self.server.model),
            )
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
    """The federation's server: public faces and DevTest only; writes the final model and history to
    ``out``."""
    _threads(context.run_config)
    recipe, fed = settings(context.run_config)
    lfw = LFW(size=recipe.train.model.input_size, download=False)
    _, _, public_names = site_identities(lfw, fed)
    pairs = lfw.pairs("devtest") if context.run_config.get("evaluate", True) else None
    server = federated.Server(
        recipe, fed, faces_of(lfw, public_names), pairs, assigned_sizes(lfw, fed)
    )
    out = Path(str(context.run_config["out"]))
    out.mkdir(parents=True, exist_ok=True)
    strategy = CraftStrategy(server, out=out)
    strategy.start(
        grid, _arrays(federated.arrays_of(server.model)), num_rounds=fed.rounds, timeout=3600
    )
    np.savez(out / "global_model.npz", **federated.arrays_of(server.model))
    (out / "history.json").write_text(json.dumps({"rounds": server.history, "sent": strategy.sent}))


# ---------------------------------------------------------------------------------------------
# the Flower App folder that `flwr run` submits (flower_deploy starts the SuperLink and SuperNodes)


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
serverapp = "craftlib.companions.federated.flower_app:server_app"
clientapp = "craftlib.companions.federated.flower_app:client_app"

[tool.flwr.app.config]
{config}
"""


def _toml_value(value) -> str:
    return json.dumps(value) if not isinstance(value, bool) else ("true" if value else "false")


def write_app_dir(path: str | Path, config: dict) -> Path:
    """A Flower App folder (only a ``pyproject.toml``: the code is the installed craftlib) for
    ``flwr run``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"{k} = {_toml_value(v)}" for k, v in config.items())
    (path / "pyproject.toml").write_text(APP_PYPROJECT.format(config=body))
    return path
