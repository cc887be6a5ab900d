"""Federated face recognition (craftlib.companions.federated.federation): what crosses the boundary,
FedAvg = centralised on identical clients, server-side re-activation identical everywhere, the
AdaFedFR-style head, the study table.

Mechanics run on ``toy_faces`` (random 16 px faces, milliseconds); one test runs the real pipeline
on LFW.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from craftlib import pages
from craftlib.companions.federated import cli as C
from craftlib.companions.federated import federation as F
from craftlib.companions.federated import study as S
from craftlib.losses import MarginHead
from craftlib.reactivation import CraftSpec
from craftlib.recipes import Recipe
from craftlib.training import Trainer


@pytest.fixture(scope="module")
def toy_recipe(toy_config):
    """The toy model at batch 64: the 64 toy faces are one step per epoch, so one round is one SGD
    step."""
    return Recipe(
        "toy", toy_config.but(batch_size=64, epochs=4, lr=0.05), CraftSpec(tau=0.9, last_epoch=3)
    )


def toy_federation(toy_faces, clients: int, public: int = 2) -> F.Federation:
    """Toy identities 0..3: the first ``4 - public`` dealt over the clients, the rest public; no
    pairs."""
    n = toy_faces.num_classes - public
    parts = F.partition(n, clients, "iid")
    pool = F.subset(toy_faces, range(n))
    return F.Federation(
        [F.subset(pool, p) for p in parts],
        F.subset(toy_faces, range(n, toy_faces.num_classes)),
        None,
        pool,
    )


# ---------------------------------------------------------------------------------------------
# splits


@pytest.mark.parametrize("split", F.SPLITS)
def test_partition_deals_every_identity_once(split):
    parts = F.partition(200, 5, split, alpha=0.3, seed=3, min_identities=4)
    everyone = np.concatenate(parts)
    assert sorted(everyone.tolist()) == list(range(200))
    assert min(len(p) for p in parts) >= 4
    assert [p.tolist() for p in parts] == [
        p.tolist() for p in F.partition(200, 5, split, 0.3, 3, 4)
    ]
    if split == "iid":
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_dirichlet_is_skewed_and_alpha_controls_it():
    spread = {
        a: np.mean(
            [np.std([len(p) for p in F.partition(300, 6, "dirichlet", a, s)]) for s in range(20)]
        )
        for a in (0.2, 100.0)
    }
    assert spread[0.2] > 3 * spread[100.0]
    with pytest.raises(ValueError, match="need"):
        F.partition(10, 4, "dirichlet", min_identities=3)


def test_fast_mode_is_announced_and_tagged_like_the_other_notebooks():
    """Notebook 08's banner and FAST tag (``reference.mode_banner`` / ``fast_note`` do not know the
    federated recipes)."""
    fast = F.mode_banner(F.FEDERATED_FAST, F.FAST_FED)
    assert fast.startswith("FAST mode") and "numbers mean nothing" in fast
    assert "3 sites, 60 people, 3 rounds" in fast and "32 px" in fast
    full = F.mode_banner(F.FEDERATED, F.FedConfig())
    assert "FAST" not in full and "4 sites, 160 people, 5 rounds" in full
    assert F.fast_note(F.FEDERATED_FAST).startswith(" [FAST mode")
    assert F.fast_note(F.FEDERATED) == ""


def test_subset_relabels(toy_faces):
    part = F.subset(toy_faces, [3, 1])
    assert part.classes == ["P3", "P1"] and sorted(set(part.labels.tolist())) == [0, 1]
    assert np.array_equal(part.images[part.labels == 0], toy_faces.images[toy_faces.labels == 3])


# ---------------------------------------------------------------------------------------------
# the boundary


def test_channel_refuses_faces():
    channel = F.Channel(face_shape=(16, 16, 3))
    with pytest.raises(F.BoundaryError, match="faces never leave"):
        channel.send("client0", "server", {"x": np.zeros((2, 16, 16, 3), np.uint8)})
    with pytest.raises(F.BoundaryError):
        channel.send("client0", "server", {"x": np.zeros((2, 16, 16, 3), np.float32)})
    channel.send("server", "client0", {"w": np.zeros((4, 3), np.float32), "renewed": [1]})
    assert len(channel.log) == 1


def test_channel_refuses_faces_nested_or_flattened(toy_faces):
    """However a face is wrapped — deep in dicts and lists, flattened, as channel planes or plain
    numbers."""
    channel = F.Channel(face_shape=(16, 16, 3))
    faces = toy_faces.images[:2]
    hidden = {
        "in a nested dict": {
            "arrays": {
                "conv1.weight": np.zeros((8, 3, 3, 3), np.float32),
                "extra": {"deep": faces.astype(np.float32)},
            }
        },
        "in a list": {"renewed": [1, faces.astype(np.float32)]},
        "flattened, one per row": {"class_means": faces.reshape(2, -1).astype(np.float32)},
        "flattened, all in one vector": {"x": faces.astype(np.int16).ravel()},
        "channel first": {"x": faces.transpose(0, 3, 1, 2).astype(np.float64)},
        "one channel plane": {"x": faces[..., 0].astype(np.float32)},
        "as a list of numbers": {"renewed": faces[0].ravel().tolist()},
        "as nested lists": {"x": [faces[0].tolist()]},
        "as bytes": {"x": faces.tobytes()},
        "as a torch tensor": {"x": torch.from_numpy(faces)},
        "as an object array": {"x": np.array([faces], dtype=object)},
    }
    for how, payload in hidden.items():
        with pytest.raises(F.BoundaryError):
            channel.send("client0", "server", payload)
            pytest.fail(f"a face {how} crossed")
    with pytest.raises(
        F.BoundaryError, match=r"client0 -> server\['arrays'\]\['extra'\]\['deep'\] looks like face"
    ):
        channel.send("client0", "server", hidden["in a nested dict"])
    assert channel.log == []  # nothing refused was logged as sent


def _honest(toy_faces, toy_recipe, fed):
    """A toy federation of two sites, its server, and site 0's honest first-round reply."""
    fedn = toy_federation(toy_faces, clients=2, public=1)
    server = F.Server(
        toy_recipe, fed, fedn.public, None, [(c.num_classes, len(c.labels)) for c in fedn.clients]
    )
    reply = F.Client(0, fedn.clients[0], toy_recipe, fed).round(server.message(0))
    return fedn, server, reply


def _tampered(reply: dict, **changes) -> dict:
    """A copy of ``reply`` with fields changed (``None`` removes one; ``arrays__NAME`` changes one
    array)."""
    bad = {**reply, "arrays": dict(reply["arrays"])}
    for key, value in changes.items():
        target, key = (
            (bad["arrays"], key[len("arrays__") :]) if key.startswith("arrays__") else (bad, key)
        )
        if value is None:
            del target[key]
        else:
            target[key] = value
    return bad


def malicious_replies(reply: dict, faces: np.ndarray) -> dict[str, tuple[dict, str]]:
    """Each hostile reply a site could send, with the reason the server must give."""
    nan = reply["arrays"]["conv1.weight"].copy()
    nan[0, 0, 0, 0] = np.nan
    return {
        "NaN weights": (_tampered(reply, **{"arrays__conv1.weight": nan}), "non-finite"),
        "10^9 examples": (_tampered(reply, num_examples=10**9), "num_examples=1000000000"),
        "a negative count": (_tampered(reply, num_examples=-5), "num_examples=-5"),
        "a fractional count": (_tampered(reply, num_examples=3.5), "num_examples=3.5"),
        "a scalar for conv1.weight": (
            _tampered(reply, **{"arrays__conv1.weight": np.array(0.5, np.float32)}),
            r"conv1.weight'\] is float32 \(\), expected float32 \(8, 3, 3, 3\)",
        ),
        "a wrong shape": (
            _tampered(reply, **{"arrays__conv1.weight": np.zeros((8, 3, 5, 5), np.float32)}),
            "expected float32",
        ),
        "float64 weights": (
            _tampered(reply, **{"arrays__conv1.weight": nan.astype(np.float64)}),
            "is float64",
        ),
        "a missing tensor": (
            {**reply, "arrays": {k: v for k, v in reply["arrays"].items() if k != "bn1.weight"}},
            "missing",
        ),
        "faces beside the weights": (
            _tampered(reply, **{"arrays__faces": faces.astype(np.float32)}),
            "unexpected",
        ),
        "faces in an extra field": (_tampered(reply, debug={"faces": faces}), "unexpected"),
        "a missing field": (_tampered(reply, train_loss=None), "missing"),
        "a NaN loss": (_tampered(reply, train_loss=float("nan")), "train_loss"),
        "an accuracy of 2": (_tampered(reply, train_acc=2.0), "train_acc"),
        "filters out of range": (_tampered(reply, renewed=[0, 99]), "renewed"),
        "not a dict": ([reply], "a reply is a dict"),
    }


def test_server_refuses_every_malicious_reply_and_keeps_its_model(toy_faces, toy_recipe, caplog):
    """A bad reply alone: refused with its reason logged, the global model bit for bit as before the
    round."""
    fed = F.FedConfig(strategy="fedavg", clients=2, rounds=2)
    _, server, reply = _honest(toy_faces, toy_recipe, fed)
    before = F.arrays_of(server.model)
    for round_, (name, (bad, reason)) in enumerate(
        malicious_replies(reply, toy_faces.images[:2]).items(), start=1
    ):
        caplog.clear()
        with caplog.at_level("WARNING", logger="craftlib.companions.federated.federation"):
            record = server.finish_round(round_, [bad], [0])  # as the site that trained it
        assert len(record["refused"]) == 1 and record["refused"][0]["client"] == 0, name
        assert re.search(reason, record["refused"][0]["reason"]), (
            name,
            record["refused"][0]["reason"],
        )
        assert (
            "refused the reply of client 0" in caplog.text
            and record["refused"][0]["reason"] in caplog.text
        )
        assert record["clients"] == [] and server.renewed == []
        assert all(np.array_equal(v, before[k]) for k, v in F.arrays_of(server.model).items()), name
    # the honest reply passes the same checks
    assert server.finish_round(99, [reply], [0]).get("refused") is None


def test_bad_reply_among_good_ones_leaves_no_trace(toy_faces, toy_recipe):
    """The honest site's round alone and the same round beside a hostile site give the same global
    model."""
    fed = F.FedConfig(strategy="fedavg", clients=2, rounds=2)
    fedn, server, reply = _honest(toy_faces, toy_recipe, fed)
    alone = F.Server(toy_recipe, fed, fedn.public, None, server.assigned)
    alone.finish_round(1, [reply], [0])
    bad = malicious_replies(reply, toy_faces.images[:2])
    server.finish_round(1, [reply, bad["10^9 examples"][0]], [0, 1])
    assert all(
        np.array_equal(v, F.arrays_of(alone.model)[k]) for k, v in F.arrays_of(server.model).items()
    )
    record = server.finish_round(2, [reply, reply], [0, 0])  # one site cannot answer twice
    assert [r["reason"] for r in record["refused"]] == ["site 0 already replied this round"]
    record = server.finish_round(3, [reply], [7])
    assert "no site 7" in record["refused"][0]["reason"]


def test_class_means_are_checked_when_asked(toy_faces, toy_recipe):
    fed = F.FedConfig(
        strategy="adafedfr", negatives_source="clients", clients=2, rounds=2, negatives_k=1
    )
    _, server, reply = _honest(toy_faces, toy_recipe, fed)
    assert reply["class_means"].shape == (
        server.assigned[0][0],
        toy_recipe.train.model.embedding_dim,
    )
    for bad in (
        np.zeros((40, reply["class_means"].shape[1]), np.float32),
        reply["class_means"][:, :2],
        np.full_like(reply["class_means"], np.inf),
    ):
        record = server.finish_round(1, [{**reply, "class_means": bad}], [0])
        assert "class_means" in record["refused"][0]["reason"]
    record = server.finish_round(1, [{k: v for k, v in reply.items() if k != "class_means"}], [0])
    assert "missing: ['class_means']" in record["refused"][0]["reason"]
    with pytest.raises(ValueError, match="needs \\(identities, faces\\) for each of its 2 sites"):
        F.Server(toy_recipe, fed, F.subset(toy_faces, [3]))


class HostileClient(F.Client):
    """A site that trains honestly, then lies, round after round: a billion faces, a scalar for
    conv1, its faces."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rounds = 0

    def round(self, message: dict) -> dict:
        reply = super().round(message)
        lies = [
            _tampered(reply, num_examples=10**9),
            _tampered(reply, **{"arrays__conv1.weight": np.array(0.5, np.float32)}),
            _tampered(reply, renewed=[0, self._data.images[:1].astype(np.float32)]),
        ]
        self.rounds += 1
        return lies[(self.rounds - 1) % len(lies)]


@pytest.mark.slow  # three toy federated runs
def test_a_hostile_site_changes_nothing_in_a_whole_run(toy_faces, toy_recipe):
    """FedAvg with an honest and a hostile site: every hostile reply refused (one at the Channel, as
    faces), and the global model after every round is the honest site's own federation's, bit for
    bit."""
    fedn = toy_federation(toy_faces, clients=2, public=1)
    fed = F.FedConfig(strategy="fedavg", clients=2, rounds=3)
    recipe = toy_recipe.but(epochs=3)
    models = {}
    for name, hostile in (("honest alone", None), ("with a hostile site", HostileClient)):
        clients = [F.Client(0, fedn.clients[0], recipe, fed)]
        if hostile:
            clients.append(hostile(1, fedn.clients[1], recipe, fed))
        keep = F.FedConfig(strategy="fedavg", clients=len(clients), rounds=3)
        models[name] = []
        record = F.run(
            recipe,
            keep,
            fedn,
            clients=clients,
            on_round=lambda r, m: models[name].append(F.arrays_of(m)),
        )
    refused = [r["refused"] for r in record["rounds"]]
    assert [[x["client"] for x in r] for r in refused] == [[1], [1], [1]]
    assert (
        "num_examples=1000000000" in refused[0][0]["reason"]
        and "expected float32" in refused[1][0]["reason"]
    )
    assert "looks like face images" in refused[2][0]["reason"]
    for honest, mixed in zip(models["honest alone"], models["with a hostile site"], strict=True):
        assert all(np.array_equal(honest[k], mixed[k]) for k in honest)


@pytest.mark.slow  # a few toy federated runs: seconds idle, a minute on the loaded 2-core machine
@pytest.mark.parametrize(
    "strategy,source", [("fedavg", "public"), ("adafedfr", "public"), ("adafedfr", "clients")]
)
def test_no_client_ever_receives_another_clients_images(toy_faces, toy_recipe, strategy, source):
    """Every payload that crossed is model arrays, embeddings, counts or indices; no image bytes of
    anyone."""
    fedn = toy_federation(toy_faces, clients=2, public=1)
    fed = F.FedConfig(
        strategy=strategy,
        clients=2,
        rounds=2,
        negatives_k=1,
        negatives_source=source,
        craft="server",
    )
    channel = F.Channel(toy_faces.images.shape[1:])
    F.run(toy_recipe.but(epochs=2), fed, fedn, channel=channel)
    state_shapes = {k: v.shape for k, v in F.arrays_of(F.global_model(toy_recipe, 0)).items()}
    dim = toy_recipe.train.model.embedding_dim
    image_bytes = {img.tobytes() for img in toy_faces.images}
    received = [m for m in channel.log if m["to"].startswith("client")]
    assert len(received) == 4 and {m["to"] for m in received} == {"client0", "client1"}
    for m in channel.log:
        for key, value in m["payload"].items():
            if key == "arrays" and value is not None:
                assert {k: v.shape for k, v in value.items()} == state_shapes
                assert all(v.dtype in (np.float32, np.int64) for v in value.values())
            elif key in ("negatives", "class_means") and value is not None:
                assert value.dtype == np.float32 and value.ndim == 2 and value.shape[1] == dim
                assert not any(row.tobytes() in image_bytes for row in value)
            else:
                assert isinstance(value, (int, float, bool, list, type(None))), (key, type(value))
    # each site's own class means never come back to it, others' do from round 2
    if source == "clients":
        second = [m for m in received if "negatives" in m["payload"]]
        sent_up = {
            m["from"]: m["payload"]["class_means"] for m in channel.log if m["to"] == "server"
        }
        for m in second:
            own = sent_up[m["to"]]
            assert not any(np.array_equal(row, o) for row in m["payload"]["negatives"] for o in own)


def test_a_client_holds_only_its_own_faces(toy_faces, toy_recipe):
    fedn = toy_federation(toy_faces, clients=2, public=0)
    clients = [
        F.Client(i, c, toy_recipe, F.FedConfig(clients=2)) for i, c in enumerate(fedn.clients)
    ]
    files = [set(c._data.files) for c in clients]
    assert files[0] and files[1] and not files[0] & files[1]


# ---------------------------------------------------------------------------------------------
# FedAvg of identical clients = centralised training


@pytest.mark.slow  # a few toy federated runs: seconds idle, a minute on the loaded 2-core machine
def test_fedavg_of_identical_clients_equals_central_step_for_step(toy_faces, toy_recipe):
    """Three clients with the same faces and seed; one SGD step (with momentum and decay) per round.

    The weighted mean of identical float32 arrays is computed in float64 and is exact, so the global
    model must equal a centralised ``Trainer`` bit for bit after every step, BatchNorm buffers
    included.
    """
    rounds = 4
    fed = F.FedConfig(strategy="fedavg", clients=3, rounds=rounds)
    data = toy_faces
    central = Trainer(data, toy_recipe.train.but(seed=0, epochs=rounds), progress=False)
    assert central.steps_per_epoch == 1
    clients = [F.Client(i, data, toy_recipe, fed, seed=0) for i in range(3)]
    fedn = F.Federation([data] * 3, F.subset(data, [0]), None, data)
    compared = []

    def check(record, model):
        central.train_steps(1)
        for key, value in central.model.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), (
                f"round {record['round']}: {key} differs"
            )
        compared.append(record["round"])

    F.run(toy_recipe, fed, fedn, clients=clients, on_round=check)
    assert compared == [1, 2, 3, 4]
    # the private heads too: each client's head is the centralised head
    assert all(
        torch.equal(F._unblob(c._blob)["head"]["weight"], central.head.weight.detach())
        for c in clients
    )


def test_aggregate_weights_by_faces():
    a = {"w": np.array([0.0, 2.0], np.float32), "n": np.array(1, np.int64)}
    b = {"w": np.array([3.0, 5.0], np.float32), "n": np.array(4, np.int64)}
    out = F.aggregate([{"arrays": a, "num_examples": 1}, {"arrays": b, "num_examples": 2}])
    assert np.allclose(out["w"], [2.0, 4.0]) and out["w"].dtype == np.float32
    assert out["n"] == 3 and out["n"].dtype == np.int64


# ---------------------------------------------------------------------------------------------
# re-activation under federation


def logged_fedavg(toy_faces, toy_recipe, craft: str, rounds: int):
    """FedAvg of two toy clients (one public identity) with CRAFT on ``craft``'s side; the run and
    every message."""
    fedn = toy_federation(toy_faces, clients=2, public=1)
    fed = F.FedConfig(strategy="fedavg", clients=2, rounds=rounds, craft=craft)
    channel = F.Channel(toy_faces.images.shape[1:])
    return F.run(toy_recipe.but(epochs=rounds), fed, fedn, channel=channel), channel


@pytest.mark.slow  # a few toy federated runs: seconds idle, a minute on the loaded 2-core machine
def test_server_side_reactivation_gives_every_client_the_same_weights(toy_faces, toy_recipe):
    record, channel = logged_fedavg(toy_faces, toy_recipe, craft="server", rounds=3)
    renewed_rounds = [r for r in record["rounds"] if r["server_renewed"]]
    assert renewed_rounds, "τ = 0.9 on the toy model must renew filters on the server"
    by_round: dict[int, list[dict]] = {}
    for i, m in enumerate(m for m in channel.log if m["to"].startswith("client")):
        by_round.setdefault(i // 2, []).append(m["payload"])
    for payloads in by_round.values():
        first, second = payloads
        assert first["renewed"] == second["renewed"]
        for key in first["arrays"]:
            assert first["arrays"][key].tobytes() == second["arrays"][key].tobytes(), key
        models = []
        for p in payloads:  # what each client's model holds once it has loaded the broadcast
            model = F.FaceCNN(toy_recipe.train.model)
            F.load_arrays(model, p["arrays"])
            models.append(model.state_dict())
        assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])


def test_server_reactivation_is_deterministic(toy_faces, toy_recipe):
    spec = toy_recipe.craft
    probe = F.probe_batch(toy_faces.images)
    outs = []
    for _ in range(2):
        model = F.global_model(toy_recipe, 5)
        with torch.no_grad():
            model.conv1.weight[:4] *= 1e-4  # four filters die
        rows = F.server_reactivate(model, spec.but(score="max", tau=0.1), probe, seed=5, round_=2)
        outs.append((rows, F.arrays_of(model)))
    assert outs[0][0] == [0, 1, 2, 3]
    assert all(outs[0][1][k].tobytes() == outs[1][1][k].tobytes() for k in outs[0][1])
    model = F.global_model(toy_recipe, 5)
    with torch.no_grad():
        model.conv1.weight[:4] *= 1e-4
    F.server_reactivate(model, spec.but(score="max", tau=0.1), probe, seed=5, round_=3)
    assert not np.array_equal(F.arrays_of(model)["conv1.weight"], outs[0][1]["conv1.weight"]), (
        "round seeds the draw"
    )


@pytest.mark.slow  # a few toy federated runs: seconds idle, a minute on the loaded 2-core machine
def test_client_side_reactivation_differs_between_clients(toy_faces, toy_recipe):
    """Per-client re-activation draws each site's own filters: averaging then blends different
    ones."""
    record, channel = logged_fedavg(toy_faces, toy_recipe, craft="client", rounds=2)
    assert all(not r["server_renewed"] for r in record["rounds"])
    first = [m["payload"] for m in channel.log if m["to"] == "server"][:2]
    assert first[0]["renewed"] and first[1]["renewed"]
    assert not np.array_equal(
        first[0]["arrays"]["conv1.weight"], first[1]["arrays"]["conv1.weight"]
    )


def test_forget_renewed_clears_momentum(toy_faces, toy_recipe):
    t = F.client_trainer(toy_faces, toy_recipe, F.FedConfig(rounds=4), 0, 7)
    t.train_steps(2)
    buf = t.optimizer.state[t.model.conv1.weight]["momentum_buffer"]
    assert buf[2].abs().sum() > 0
    F.forget_renewed(t, [2], toy_recipe.craft)
    assert buf[2].abs().sum() == 0 and buf[3].abs().sum() > 0
    consumer = t.optimizer.state[t.model.body[0][0].weight]["momentum_buffer"]
    assert consumer[:, 2].abs().sum() == 0
    # as reactivate: keep stops at BatchNorm
    F.forget_renewed(t, [3], toy_recipe.craft.but(downstream="keep"))
    assert buf[3].abs().sum() == 0 and consumer[:, 3].abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# the AdaFedFR-style head


def test_shared_negatives_head():
    torch.manual_seed(0)
    plain = MarginHead(8, 3)
    head = F.SharedNegativesHead(8, 3)
    head.load_state_dict(plain.state_dict())
    emb, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    assert torch.equal(head(emb, y), plain(emb, y))
    negatives = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    head.share(negatives, k=2, weight=0.5)
    logits = head(emb, y)
    assert logits.shape == (5, 5) and torch.equal(logits[:, :3], plain(emb, y))
    cos = (
        torch.nn.functional.normalize(emb)
        @ torch.nn.functional.normalize(torch.from_numpy(negatives)).T
    )
    expected = head.scale * cos.topk(2, dim=1).values + np.log(0.5)
    assert torch.allclose(logits[:, 3:], expected, atol=1e-5)
    assert F.adaptive_weight(10, 30) == pytest.approx(0.75) and F.adaptive_weight(10, 0) == 0.0


def test_retrieval_attack_shapes(toy_faces, toy_recipe):
    model = F.global_model(toy_recipe, 0)
    out = F.retrieval_attack(model, toy_faces, toy_faces.images[:5])
    assert out["identities"] == 4 and out["gallery"] == 9
    assert 0 <= out["top1"] <= out["top5"] <= 1 and out["chance_top1"] == pytest.approx(1 / 9)


# ---------------------------------------------------------------------------------------------
# the study's records and table


@pytest.mark.slow  # a few toy federated runs: seconds idle, a minute on the loaded 2-core machine
def test_local_and_central_runs_and_the_table(toy_faces, toy_recipe):
    fedn = toy_federation(toy_faces, clients=2, public=1)
    records = []
    for strategy, craft in (
        ("local", "none"),
        ("central", "none"),
        ("central", "server"),
        ("fedavg", "none"),
    ):
        for seed in (0, 1):
            fed = F.FedConfig(strategy=strategy, craft=craft, clients=2, rounds=2, seed=seed)
            rec = F.run(toy_recipe.but(epochs=2), fed, fedn)
            # no pairs here
            rec["final"]["accuracy"] = 0.6 + 0.01 * seed + (0.02 if craft == "server" else 0)
            records.append(rec)
    assert records[0]["final"]["client_silent_fraction"] and len(records[0]["rounds"]) == 2
    table = S.study_table(records)
    assert "local only" in table and "centralised (ceiling)" in table and "+2.00 pts" in table


# ---------------------------------------------------------------------------------------------
# the real pipeline on LFW


@pytest.mark.slow
def test_adafedfr_on_lfw_with_server_craft(lfw, devtest_subset):
    """FAST federation on real LFW: three sites, public identities, shared negatives, DevTest each
    round."""
    fed = F.FAST_FED.but(strategy="adafedfr", split="dirichlet", craft="server", rounds=2)
    fedn = F.federation(lfw, fed, devtest_subset)
    assert len({f for c in fedn.clients for f in c.files}) == sum(
        len(c.files) for c in fedn.clients
    )
    assert not set(fedn.public.classes) & {n for c in fedn.clients for n in c.classes}
    record = F.run(F.FEDERATED_FAST.but(epochs=2), fed, fedn)
    assert [r["round"] for r in record["rounds"]] == [1, 2]
    assert all(0.4 < r["global"]["accuracy"] <= 1 for r in record["rounds"])
    assert len(record["final"]["client_accuracy"]) == 3
    # the final global model's, kept per pair
    assert len(record["final"]["pair_scores"]) == len(devtest_subset)


def test_a_study_folder_refuses_another_budget(tmp_path):
    """Runs of one folder make one table: a second budget or recipe must go elsewhere, and says
    which field differs."""
    import json
    from dataclasses import asdict

    fed = F.FedConfig(strategy="fedavg", seed=0)
    (tmp_path / "records").mkdir()
    record = {
        "name": fed.name,
        "fed": asdict(fed),
        "recipe": json.loads(json.dumps(F.FEDERATED.to_dict())),
    }
    (tmp_path / "records" / f"{fed.name}.json").write_text(json.dumps(record))
    S.check_study_folder(
        tmp_path, F.FedConfig(strategy="adafedfr", craft="server", seed=2), F.FEDERATED
    )  # another arm: fine
    with pytest.raises(ValueError, match="local_epochs, rounds differ"):
        S.check_study_folder(tmp_path, F.FedConfig(rounds=10, local_epochs=2), F.FEDERATED)
    with pytest.raises(ValueError, match="recipe differ"):
        S.check_study_folder(tmp_path, F.FedConfig(), F.FEDERATED_FAST)
    with pytest.raises(SystemExit):
        C.main(["--out", str(tmp_path), "--arms", "fedavg-iid-nonsense"])
    names = S.arm_names()
    assert len(names) == len(S.STUDY_ARMS) and names["central_steps-all-none"] == (
        "central_steps",
        "iid",
        "none",
    )
    assert names["fedavg-dirichlet-server"] == ("fedavg", "dirichlet", "server")


def test_results_md_federated_table_is_the_committed_records():
    """docs/RESULTS.md's federated table is ``study_table`` of the committed records: every arm x 3
    seeds."""
    from craftlib.paths import REPO_ROOT

    records = S.load_study(REPO_ROOT / "docs" / "results" / "companion_federated")
    assert len(records) == 3 * len(S.STUDY_ARMS) and {r["seed"] for r in records} == {0, 1, 2}
    S.check_study_folder(
        REPO_ROOT / "docs" / "results" / "companion_federated", F.FedConfig(), F.FEDERATED
    )
    block = pages.read_block(REPO_ROOT / "docs" / "RESULTS.md", "federated:table")
    assert block == S.study_table(records), (
        "regenerate: python -m craftlib.companions.federated.cli --report, then paste"
    )


def test_central_steps_takes_one_sites_step_count(toy_faces, toy_recipe, monkeypatch):
    """The decay-budget control trains on every face with a batch ``clients`` times larger: as many
    SGD steps as one site of an even split (the record's ``steps`` says so, and the trainer really
    takes that many)."""
    fedn = toy_federation(toy_faces, clients=2, public=0)  # 64 faces, 2 sites of 32
    recipe = toy_recipe.but(batch_size=8, epochs=2)
    taken = []
    real = F.Trainer.train_steps
    monkeypatch.setattr(F.Trainer, "train_steps", lambda self, n: taken.append(n) or real(self, n))
    control = F.run(recipe, F.FedConfig(strategy="central_steps", clients=2, rounds=2), fedn)
    assert (
        control["name"] == "central_steps-all-none-s0"
        and control["steps"] == [8]
        and taken == [4, 4]
    )
    assert F.run(recipe, F.FedConfig(strategy="central", clients=2, rounds=2), fedn)["steps"] == [
        16
    ]
    assert F.run(recipe, F.FedConfig(strategy="fedavg", clients=2, rounds=2), fedn)["steps"] == [
        8,
        8,
    ]
    with pytest.raises(ValueError, match="craft='client'"):
        F.FedConfig(strategy="central_steps", craft="client")


def test_privacy_study_attacks_the_trained_global_model(toy_faces, toy_recipe):
    """The attack runs on the model the run ends with, at every noise level, and the table reads
    it."""
    fedn = toy_federation(toy_faces, clients=2, public=1)
    fed = F.FedConfig(
        strategy="adafedfr", negatives_source="clients", clients=2, rounds=2, negatives_k=2
    )
    blob = F.privacy_study(
        toy_recipe.but(epochs=2), fed, fedn, noises=(0.0, 0.1), distractors=toy_faces.images[:5]
    )
    assert [a["noise"] for a in blob["attacks"]] == [0.0, 0.1] and blob["site_identities"] >= 1
    assert all(0 <= a["top1"] <= a["top5"] <= 1 for a in blob["attacks"])
    blob["accuracy"] = 0.6  # no pairs in the toy federation
    table = F.privacy_table(blob)
    assert table.count("\n| ") == 2 and "global model at DevTest 60.0%" in table


def test_results_md_privacy_block_is_the_committed_measurement():
    """The privacy table in docs/RESULTS.md is ``privacy_table`` of the committed privacy.json, on a
    trained model."""
    import json

    from craftlib.paths import REPO_ROOT

    blob = json.loads(
        (REPO_ROOT / "docs" / "results" / "companion_federated_full" / "privacy.json").read_text()
    )
    assert (
        blob["fed"]["negatives_source"] == "clients"
        and blob["fed"]["identities"] == 1202
        and blob["accuracy"] > 0.7
    )
    block = pages.read_block(REPO_ROOT / "docs" / "RESULTS.md", "federated:privacy")
    assert block == F.privacy_table(blob), (
        "regenerate: python -m craftlib.companions.federated.cli --privacy ..."
    )
