"""The Flower adapter (craftlib.companions.federated.flower_app) and its deployment (flower_deploy,
flower_keys): records round-trip, each site reads only its own faces, every reply crosses the same
boundary as in-process and a hostile one is refused, ``--insecure`` exists only on loopback, and a
real multi-process deployment — TLS, registered SuperNodes only, a SuperLink and two SuperNodes over
127.0.0.1 — turns away two intruders and finishes with the global model that ``federated.run``
computes in-process for the same seed, bit for bit.

Needs the optional extra (``pip install -e '.[federated]'``); skipped with the reason without it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import torch

flwr = pytest.importorskip(
    "flwr", reason="the federated extra is not installed: pip install -e '.[federated]'"
)

from craftlib.companions.federated import federation as F  # noqa: E402
from craftlib.companions.federated import flower_app as A  # noqa: E402
from craftlib.companions.federated import flower_deploy as D  # noqa: E402
from craftlib.companions.federated import flower_keys as K  # noqa: E402


@pytest.fixture(scope="module")
def toy_recipe(toy_config):
    """The toy model at batch 64 (as tests/test_federated.py): one round is one SGD step."""
    from craftlib.reactivation import CraftSpec
    from craftlib.recipes import Recipe

    return Recipe(
        "toy", toy_config.but(batch_size=64, epochs=4, lr=0.05), CraftSpec(tau=0.9, last_epoch=3)
    )


TINY = F.FedConfig(
    strategy="adafedfr",
    craft="server",
    clients=2,
    identities=12,
    public=6,
    rounds=2,
    min_identities=3,
    negatives_k=4,
)
"""Two sites of six people each, six public identities, two rounds: every path of the adapter,
small."""


def test_payloads_round_trip_through_flower_records():
    rng = np.random.default_rng(0)
    arrays = {
        "conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "bn1.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    message = {
        "arrays": arrays,
        "renewed": [1, 3],
        "negatives": rng.standard_normal((5, 8)).astype(np.float32),
    }
    back = A.from_records(A.to_records(message, round_=2))
    assert back["renewed"] == [1, 3] and back["want_means"] is False
    assert all(
        back["arrays"][k].tobytes() == v.tobytes()
        and back["arrays"][k].dtype == v.dtype
        and back["arrays"][k].shape == v.shape
        for k, v in arrays.items()
    )  # 0-d stays 0-d
    assert np.array_equal(back["negatives"], message["negatives"])
    empty = A.from_records(A.to_records({"arrays": None, "renewed": []}, 1))
    assert empty["arrays"] is None and empty["renewed"] == [] and empty["negatives"] is None
    reply = {
        "arrays": arrays,
        "num_examples": 12,
        "train_loss": 1.5,
        "train_acc": 0.25,
        "silent_fraction": 0.0,
        "renewed": [2],
        "class_means": rng.standard_normal((3, 8)).astype(np.float32),
    }
    pid, got = A.reply_from_records(A.reply_records(reply, 1))
    assert pid == 1 and got["renewed"] == [2] and got["num_examples"] == 12
    assert (
        np.array_equal(got["class_means"], reply["class_means"])
        and got["arrays"].keys() == arrays.keys()
    )


def test_run_config_round_trip(tmp_path):
    cfg = A.run_config("fast", TINY, tmp_path)
    recipe, fed = A.settings(cfg)
    assert fed == TINY and recipe is F.FEDERATED_FAST
    app = A.write_app_dir(tmp_path / "app", cfg)
    import tomli

    parsed = tomli.loads((app / "pyproject.toml").read_text())
    assert (
        parsed["tool"]["flwr"]["app"]["components"]["clientapp"]
        == "craftlib.companions.federated.flower_app:client_app"
    )
    assert A.settings(parsed["tool"]["flwr"]["app"]["config"])[1] == TINY
    with pytest.raises(ValueError, match="needs no federation"):
        A.run_config("fast", TINY.but(strategy="local", craft="none"), tmp_path)


def test_each_site_reads_only_its_own_faces(lfw):
    """A SuperNode loads its partition's files only, and they are exactly ``federation``'s client
    faces."""
    fedn = F.federation(lfw, TINY)
    for pid in range(TINY.clients):
        mine = A.site_faces(lfw, TINY, pid)
        assert mine.files == fedn.clients[pid].files and np.array_equal(
            mine.images, fedn.clients[pid].images
        )
        assert np.array_equal(mine.labels, fedn.clients[pid].labels)
    _, _, public = A.site_identities(lfw, TINY)
    assert np.array_equal(A.faces_of(lfw, public).images, fedn.public.images)


def test_flower_command_lengthens_the_claim_window():
    assert D.flower_command("superlink", ["--insecure"])[-1] == "--insecure"
    cmd = D.flower_command("supernode", ["--insecure"], claim_window_s=300)
    assert "HEARTBEAT_DEFAULT_INTERVAL = 300" in cmd[2] and cmd[-1] == "--insecure"


def flower_parsers():
    """Flower's own argument parsers of flower-superlink and flower-supernode (what the commands
    must satisfy)."""
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

    return _parse_args_run_superlink(), _parse_args_run_supernode()


def test_insecure_only_on_loopback_and_every_listener_bound():
    link, node = flower_parsers()
    for address in ("192.168.1.10:9092", "0.0.0.0:9092", "[::]:9092", "workshop.local:9092"):
        with pytest.raises(ValueError, match="--insecure only on loopback"):
            D.superlink_args(address, 8000)
        with pytest.raises(ValueError, match="--insecure only on loopback"):
            D.supernode_args(address, 9094, 0, 2)
    plain = link.parse_args(D.superlink_args("127.0.0.1:9092", 8000))
    assert (
        plain.insecure and plain.fleet_api_address == "127.0.0.1:9092" and plain.host == "127.0.0.1"
    )
    secure = link.parse_args(D.superlink_args("192.168.1.10:9092", 8000, "keys"))
    assert (
        not secure.insecure
        and secure.enable_supernode_auth
        and secure.ssl_certfile == "keys/server.pem"
    )
    # Control API: server only
    assert secure.fleet_api_address == "192.168.1.10:9092" and secure.host == "127.0.0.1"
    site = node.parse_args(
        D.supernode_args("192.168.1.10:9092", 9094, 1, 2, "ca.crt", "site1", max_wait_s=30)
    )
    assert (
        not site.insecure
        and site.root_certificates == "ca.crt"
        and site.auth_supernode_private_key == "site1"
    )
    assert site.host == "127.0.0.1" and site.node_config == "partition-id=1 num-partitions=2"
    assert 'root-certificates = "k/ca.crt"' in D.connection_config(8000, "k/ca.crt")
    assert "insecure = true" in D.connection_config(
        8000
    ) and '"127.0.0.1:8000"' in D.connection_config(8000)


def test_certificates_and_site_keys_are_what_flower_reads(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_ssh_private_key,
    )
    from flwr.cli.supernode.register import try_load_public_key

    paths = K.write_certificates(tmp_path / "keys", ["192.168.1.10", "workshop.local"])
    ca, cert = (
        x509.load_pem_x509_certificate(paths[k].read_bytes()) for k in ("ca", "certificate")
    )
    cert.verify_directly_issued_by(ca)  # raises unless the CA signed it
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {
        "192.168.1.10",
        "127.0.0.1",
    }
    assert set(names.get_values_for_type(x509.DNSName)) == {"workshop.local", "localhost"}
    key = load_pem_private_key(paths["key"].read_bytes(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert stat.S_IMODE(paths["key"].stat().st_mode) == 0o600
    with pytest.raises(FileExistsError, match="remove them first"):
        K.write_certificates(tmp_path / "keys")
    private, public = K.write_site_key(tmp_path / "site0")
    # as the SuperNode
    assert isinstance(load_ssh_private_key(private.read_bytes(), None), ec.EllipticCurvePrivateKey)
    # as `flwr supernode register`
    assert try_load_public_key(public).startswith(b"-----BEGIN PUBLIC KEY-----")
    assert (
        stat.S_IMODE(private.stat().st_mode) == 0o600
        and private.read_bytes() != K.write_site_key(tmp_path / "site1")[0].read_bytes()
    )
    with pytest.raises(FileExistsError):
        K.write_site_key(tmp_path / "site0")


def test_keys_command_line(tmp_path, capsys):
    assert K.main(["superlink", "--out", str(tmp_path / "keys"), "--host", "10.0.0.5"]) == 0
    assert K.main(["site", "--out", str(tmp_path / "site0")]) == 0
    assert (
        "send it to the instructor" in capsys.readouterr().out
        and (tmp_path / "site0.pub").is_file()
    )
    for again in (
        ["superlink", "--out", str(tmp_path / "keys")],
        ["site", "--out", str(tmp_path / "site0")],
        ["superlink", "--out", str(tmp_path / "other"), "--days", "0"],
    ):
        with pytest.raises(SystemExit) as stop:
            K.main(again)
        assert stop.value.code == 2
    assert not (tmp_path / "other").exists()


# ---------------------------------------------------------------------------------------------
# the Flower path goes through the same boundary


def _reply_message(content, node: int, error=None):
    """A reply as the SuperLink hands it to the Strategy: from ``node``, with ``content`` or an
    ``error``."""
    from flwr.app import Error, Message, MessageType, Metadata

    meta = Metadata(
        run_id=1,
        message_id="",
        src_node_id=node,
        dst_node_id=1,
        reply_to_message_id="m",
        group_id="1",
        created_at=time.time(),
        ttl=60,
        message_type=MessageType.TRAIN,
    )
    if error:
        return Message(metadata=meta, error=Error(code=1, reason=error))
    return Message(content=content, metadata=meta)


def test_strategy_refuses_hostile_replies_and_keeps_the_honest_model(toy_faces, toy_recipe, caplog):
    """Node 7 answers honestly for site 0 every round; node 8 answers for site 1 with another lie
    each round. Each lie is refused with its reason logged, and the global model is exactly the
    honest site's."""
    fed = F.FedConfig(strategy="fedavg", clients=2, rounds=2)
    parts = F.partition(3, 2, "iid")
    pool = F.subset(toy_faces, range(3))
    sites = [F.subset(pool, p) for p in parts]
    server = F.Server(
        toy_recipe,
        fed,
        F.subset(toy_faces, [3]),
        None,
        [(s.num_classes, len(s.labels)) for s in sites],
    )
    strategy = A.CraftStrategy(server)
    honest = F.Client(0, sites[0], toy_recipe, fed).round(server.message(0))
    good = A.reply_records(honest, 0)
    liar = F.Client(1, sites[1], toy_recipe, fed).round(server.message(1))
    faces = toy_faces.images[:2]

    def records(partition=1, **changes):
        arrays = {
            **liar["arrays"],
            **{k[len("arrays__") :]: v for k, v in changes.items() if k.startswith("arrays__")},
        }
        return A.reply_records(
            {**liar, **{k: v for k, v in changes.items() if "__" not in k}, "arrays": arrays},
            partition,
        )

    nan = liar["arrays"]["conv1.weight"].copy()
    nan[1, 1, 1, 1] = np.nan
    flat = records()
    # a face flattened into a metric
    flat["metrics"]["train_loss"] = faces[0].ravel().astype(float).tolist()
    in_means = records()
    in_means["class_means"] = A._arrays({"class_means": faces.astype(np.float32)})
    broken = records()
    del broken["metrics"]
    lies = {
        "NaN weights": (records(**{"arrays__conv1.weight": nan}), "non-finite"),
        "10^9 examples": (records(num_examples=10**9), "num_examples=1000000000"),
        "a scalar for conv1.weight": (
            records(**{"arrays__conv1.weight": np.array(0.5, np.float32)}),
            r"is float32 \(\), expected",
        ),
        "a face flattened into a metric": (flat, "looks like face images"),
        "faces as class means": (in_means, "looks like face images"),
        "records that are no reply": (broken, "its records are not a reply \\(no 'metrics'\\)"),
        "another site's partition": (
            records(partition=0),
            "answered for site 1 before, now for site 0",
        ),
        "a crash": (None, r"ClientApp failed \(code 1\): boom"),
    }
    for round_, (name, (content, reason)) in enumerate(lies.items(), start=1):
        caplog.clear()
        reply = _reply_message(content, 8, error="boom" if content is None else None)
        with caplog.at_level("WARNING", logger="craftlib.companions.federated.federation"):
            strategy.aggregate_train(round_, [_reply_message(good, 7), reply])
        record = server.history[-1]
        assert [r["client"] for r in record.get("refused", [])] in ([1], ["on node 8"]), (
            name,
            record.get("refused"),
        )
        assert re.search(reason, record["refused"][0]["reason"]), (
            name,
            record["refused"][0]["reason"],
        )
        assert "refused the reply" in caplog.text
        assert all(
            np.array_equal(v, honest["arrays"][k]) for k, v in F.arrays_of(server.model).items()
        ), name
    # a new node, site 0 again
    strategy.aggregate_train(98, [_reply_message(good, 7), _reply_message(good, 9)])
    assert server.history[-1]["refused"] == [
        {"client": 0, "reason": "site 0 already replied this round"}
    ]
    assert all(np.array_equal(v, honest["arrays"][k]) for k, v in F.arrays_of(server.model).items())


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_secure_multiprocess_flower_run_turns_intruders_away_and_matches_in_process(lfw, tmp_path):
    """SuperLink + 2 registered SuperNodes over TLS on 127.0.0.1 (gRPC Fleet API), `flwr run`; two
    intruders (a key nobody registered, no key) are turned away first. The global model after two
    rounds of AdaFedFR-style training with server-side CRAFT equals federated.run's, bit for bit
    (one thread each)."""
    out = tmp_path / "out"
    app = A.write_app_dir(
        tmp_path / "app", A.run_config("fast", TINY, out, threads=1, evaluate=False)
    )
    env = {"CRAFTLIB_DATA": str(lfw.root), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    info = D.run_local_deployment(
        app,
        TINY.clients,
        tmp_path / "deploy",
        timeout=1200,
        env=env,
        intruders=True,
        claim_window_s=float(os.environ.get("CRAFTLIB_FLOWER_CLAIM_S", 600)),
    )
    seconds = time.perf_counter() - started
    logs = {name: open(path).read() for name, path in info["logs"].items()}
    assert info["secure"] and (out / "global_model.npz").is_file(), D._tails(info["logs"])
    assert "Uvicorn running on https://127.0.0.1" in logs["superlink"]  # the Control API speaks TLS
    assert "`--insecure` was set" not in logs["superlink"]
    assert f"Fleet API (gRPC-rere) on 127.0.0.1:{info['ports']['fleet']}" in logs["superlink"]
    assert all(code != 0 for code in info["intruders"].values()) and set(info["intruders"]) == set(
        D.INTRUDERS
    )
    assert "[code: 2004] Failed to activate SuperNode" in logs["intruder-unregistered"]
    assert "[code: 2001] SuperNode authentication is enabled" in logs["intruder-keyless"]
    assert "No SuperNode found with the given public key" in logs["superlink"]
    flower_model = dict(np.load(out / "global_model.npz"))
    history = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in history["rounds"]] == [1, 2] and not any(
        "refused" in r for r in history["rounds"]
    )
    assert (
        len({s["node"] for s in history["sent"]}) == 2 and len(history["sent"]) == 2 * TINY.rounds
    )  # no intruder
    assert all("negatives" in s["keys"] and "arrays" in s["keys"] for s in history["sent"])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fedn = F.federation(lfw, TINY)
        fedn.pairs = None
        rounds = []
        F.run(
            F.FEDERATED_FAST,
            TINY,
            fedn,
            on_round=lambda record, model: rounds.append(F.arrays_of(model)),
        )
    finally:
        torch.set_num_threads(threads)
    assert all(c["resumed"] for c in history["rounds"][1]["clients"]), (
        "each site's private state survives a round"
    )
    for r, in_process in enumerate(rounds, start=1):
        flower_round = dict(np.load(out / f"global_round{r}.npz"))
        assert flower_round.keys() == in_process.keys()
        differing = [k for k in in_process if flower_round[k].tobytes() != in_process[k].tobytes()]
        assert not differing, (
            f"round {r}: Flower and in-process global models differ in {differing} ({seconds:.0f} "
            f"s)"
        )
    assert all(flower_model[k].tobytes() == rounds[-1][k].tobytes() for k in flower_model)
    renewed = [r["server_renewed"] for r in history["rounds"]]
    assert any(renewed), "FAST's τ = 0.3 renews filters on the server"


# ---------------------------------------------------------------------------------------------
# docs/SCALE.md's federation commands


SCALE_MD = Path(__file__).resolve().parent.parent / "docs" / "SCALE.md"


def federation_commands() -> list[list[str]]:
    """The Flower section's commands, ``$SERVER`` a LAN address."""
    section = SCALE_MD.read_text().split("## A federation across machines")[1]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [
        shlex.split(line.replace("$SERVER", "192.168.1.10"))
        for block in blocks
        for line in block.splitlines()
        if line and not line.startswith("#")
    ]


def test_documented_federation_commands_are_the_tested_ones(tmp_path, monkeypatch):
    """Every SuperLink/SuperNode command parses with Flower's own parser; --insecure only where
    every address is 127.0.0.1; the multi-site ones are, flag for flag, what flower_deploy runs in
    the multi-process test; the key commands run as written."""
    link, node = flower_parsers()
    commands = federation_commands()
    parsed = {"link": [], "node": []}
    for tokens in commands:
        if tokens[0] in ("flower-superlink", "flower-supernode"):
            kind = "link" if tokens[0] == "flower-superlink" else "node"
            args = (link if kind == "link" else node).parse_args(tokens[1:])
            addresses = [
                a
                for a in (
                    getattr(args, "fleet_api_address", None),
                    getattr(args, "superlink", None),
                )
                if a
            ]
            assert not args.insecure or all(a.startswith("127.0.0.1:") for a in addresses), tokens
            assert args.host == "127.0.0.1", tokens  # control / runtime APIs never on the LAN
            parsed[kind].append(args)
    secure_link = [a for a in parsed["link"] if not a.insecure]
    secure_node = [a for a in parsed["node"] if not a.insecure]
    assert len(secure_link) == 1 and len(secure_node) == 1 and len(parsed["node"]) == 3
    assert secure_link[0] == link.parse_args(D.superlink_args("192.168.1.10:9092", 8000, "keys"))
    assert secure_node[0] == node.parse_args(
        D.supernode_args("192.168.1.10:9092", 9094, 0, 2, "ca.crt", "site")
    )
    assert [c[:4] for c in commands if c[0] == "flwr"] == [
        ["flwr", "run", "fed-app", "local"],
        ["flwr", "supernode", "register", "site0.pub"],
        ["flwr", "run", "fed-app", "workshop"],
    ]
    monkeypatch.chdir(tmp_path)
    for tokens in (
        c
        for c in commands
        if c[:3] == ["python", "-m", "craftlib.companions.federated.flower_keys"]
    ):
        assert K.main(tokens[3:]) == 0
    assert {p.name for p in tmp_path.rglob("*") if p.is_file()} == {
        "ca.crt",
        "server.pem",
        "server.key",
        "site",
        "site.pub",
    }


def test_notebook_08_deployment_commands_stay_on_loopback():
    """Notebook 08's section 7: every Flower command parses, and its --insecure never leaves
    127.0.0.1."""
    import nbformat

    nb = nbformat.read(SCALE_MD.parent.parent / "notebooks" / "08_federated.ipynb", as_version=4)
    section = next(
        c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## 7.")
    )
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    commands = [
        shlex.split(line, comments=True)
        for line in block.splitlines()
        if line.startswith("flower-")
    ]
    link, node = flower_parsers()
    assert [c[0] for c in commands] == ["flower-superlink", "flower-supernode", "flower-supernode"]
    for tokens in commands:
        args = (link if tokens[0] == "flower-superlink" else node).parse_args(tokens[1:])
        address = getattr(args, "fleet_api_address", None) or args.superlink
        assert args.insecure and address.startswith("127.0.0.1:") and args.host == "127.0.0.1", (
            tokens
        )
