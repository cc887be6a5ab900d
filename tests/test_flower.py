"""The Flower adapter (craftlib.flower_app): records round-trip, each site reads only its own faces, and a real
multi-process deployment (a SuperLink and two SuperNodes over 127.0.0.1) finishes with the global model that
``federated.run`` computes in-process for the same seed — bit for bit.

Needs the optional extra (``pip install -e '.[federated]'``); skipped with the reason without it.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch

flwr = pytest.importorskip("flwr", reason="the federated extra is not installed: pip install -e '.[federated]'")

from craftlib import federated as F  # noqa: E402
from craftlib import flower_app as A  # noqa: E402

TINY = F.FedConfig(strategy="adafedfr", craft="server", clients=2, identities=12, public=6, rounds=2,
                   min_identities=3, negatives_k=4)
"""Two sites of six people each, six public identities, two rounds: every path of the adapter, small."""


def test_payloads_round_trip_through_flower_records():
    rng = np.random.default_rng(0)
    arrays = {"conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "bn1.num_batches_tracked": np.array(7, dtype=np.int64)}
    message = {"arrays": arrays, "renewed": [1, 3], "negatives": rng.standard_normal((5, 8)).astype(np.float32)}
    back = A.from_records(A.to_records(message, round_=2))
    assert back["renewed"] == [1, 3] and back["want_means"] is False
    assert all(back["arrays"][k].tobytes() == v.tobytes() and back["arrays"][k].dtype == v.dtype for k, v in arrays.items())
    assert np.array_equal(back["negatives"], message["negatives"])
    empty = A.from_records(A.to_records({"arrays": None, "renewed": []}, 1))
    assert empty["arrays"] is None and empty["renewed"] == [] and empty["negatives"] is None
    reply = {"arrays": arrays, "num_examples": 12, "train_loss": 1.5, "train_acc": 0.25, "silent_fraction": 0.0,
             "renewed": [2], "class_means": rng.standard_normal((3, 8)).astype(np.float32)}
    pid, got = A.reply_from_records(A.reply_records(reply, 1))
    assert pid == 1 and got["renewed"] == [2] and got["num_examples"] == 12
    assert np.array_equal(got["class_means"], reply["class_means"]) and got["arrays"].keys() == arrays.keys()


def test_run_config_round_trip(tmp_path):
    cfg = A.run_config("fast", TINY, tmp_path)
    recipe, fed = A.settings(cfg)
    assert fed == TINY and recipe is F.FEDERATED_FAST
    app = A.write_app_dir(tmp_path / "app", cfg)
    import tomli

    parsed = tomli.loads((app / "pyproject.toml").read_text())
    assert parsed["tool"]["flwr"]["app"]["components"]["clientapp"] == "craftlib.flower_app:client_app"
    assert A.settings(parsed["tool"]["flwr"]["app"]["config"])[1] == TINY
    with pytest.raises(ValueError, match="needs no federation"):
        A.run_config("fast", TINY.but(strategy="local", craft="none"), tmp_path)


def test_each_site_reads_only_its_own_faces(lfw):
    """A SuperNode loads its partition's files only, and they are exactly ``federation``'s client faces."""
    fedn = F.federation(lfw, TINY)
    for pid in range(TINY.clients):
        mine = A.site_faces(lfw, TINY, pid)
        assert mine.files == fedn.clients[pid].files and np.array_equal(mine.images, fedn.clients[pid].images)
        assert np.array_equal(mine.labels, fedn.clients[pid].labels)
    _, _, public = A.site_identities(lfw, TINY)
    assert np.array_equal(A.faces_of(lfw, public).images, fedn.public.images)


def test_flower_command_lengthens_the_claim_window():
    assert A.flower_command("superlink", ["--insecure"])[-1] == "--insecure"
    cmd = A.flower_command("supernode", ["--insecure"], claim_window_s=300)
    assert "HEARTBEAT_DEFAULT_INTERVAL = 300" in cmd[2] and cmd[-1] == "--insecure"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_multiprocess_flower_run_matches_in_process(lfw, tmp_path):
    """SuperLink + 2 SuperNodes over 127.0.0.1 (gRPC Fleet API), `flwr run`: the global model after two rounds
    of AdaFedFR-style training with server-side CRAFT equals federated.run's, bit for bit (one thread each)."""
    out = tmp_path / "out"
    app = A.write_app_dir(tmp_path / "app", A.run_config("fast", TINY, out, threads=1, evaluate=False))
    env = {"CRAFTLIB_DATA": str(lfw.root), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    info = A.run_local_deployment(app, TINY.clients, tmp_path / "deploy", timeout=1500, env=env,
                                  claim_window_s=float(os.environ.get("CRAFTLIB_FLOWER_CLAIM_S", 600)))
    seconds = time.perf_counter() - started
    assert (out / "global_model.npz").is_file(), A._tails(info["logs"])
    flower_model = dict(np.load(out / "global_model.npz"))
    history = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in history["rounds"]] == [1, 2]
    assert {s["node"] for s in history["sent"]} and len(history["sent"]) == 2 * TINY.rounds
    assert all("negatives" in s["keys"] and "arrays" in s["keys"] for s in history["sent"])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fedn = F.federation(lfw, TINY)
        fedn.pairs = None
        rounds = []
        F.run(F.FEDERATED_FAST, TINY, fedn, on_round=lambda record, model: rounds.append(F.arrays_of(model)))
    finally:
        torch.set_num_threads(threads)
    assert all(c["resumed"] for c in history["rounds"][1]["clients"]), "each site's private state survives a round"
    for r, in_process in enumerate(rounds, start=1):
        flower_round = dict(np.load(out / f"global_round{r}.npz"))
        assert flower_round.keys() == in_process.keys()
        differing = [k for k in in_process if flower_round[k].tobytes() != in_process[k].tobytes()]
        assert not differing, f"round {r}: Flower and in-process global models differ in {differing} ({seconds:.0f} s)"
    assert all(flower_model[k].tobytes() == rounds[-1][k].tobytes() for k in flower_model)
    renewed = [r["server_renewed"] for r in history["rounds"]]
    assert any(renewed), "FAST's τ = 0.3 renews filters on the server"
