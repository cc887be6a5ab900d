"""Federated face recognition on LFW: sites that never share a face, and CRAFT when no one sees all
the data.

Plain functions, no federated engine: ``flower_app`` wraps exactly these in Flower's ``ServerApp`` /
``ClientApp`` / ``Strategy``, and ``run`` is the in-process path the notebook uses. The pieces:

- **clients**: LFW training identities dealt to K sites, evenly (``iid``) or with a Dirichlet draw
  over how many identities each site holds (``dirichlet``); each site's faces stay inside its
  ``Client``;
- **strategies**: ``local`` (each site alone), ``fedavg`` (the backbone averaged, every margin head
  kept private), ``adafedfr`` (FedAvg plus shared class representations used as fixed negatives with
  an adaptive weight; ``docs/RESULTS.md`` says what is the paper's and what is ours) and ``central``
  (all faces in one place: the ceiling);
- **re-activation**: ``server`` (once per round on the aggregated model, with a generator seeded by
  (seed, round), so every client receives the same weights) or ``client`` (each site re-activates
  its own model before aggregation, on its own faces).

What crosses the boundary between a client and the server is only ever model arrays, class
representations (embeddings), counts and filter indices: ``Channel`` carries all of it, refuses
faces however nested, and keeps a log that the tests read; the ``Server`` refuses any reply that is
not exactly a reply (``federated_boundary``), with the reason logged, and aggregates without it. The
seed study over these functions is ``federated_study``; its command line, ``federated_cli``.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from craftlib.activity import SILENT_TAU, model_scores
from craftlib.data import LFW, FaceSet, PairSet, probe_batch
from craftlib.losses import MarginHead
from craftlib.models import FaceCNN
from craftlib.reactivation import CraftSpec, forget, reactivate_model, stem_parts, surroundings
from craftlib.recipes import WORKSHOP, Recipe
from craftlib.runtime import seed_everything
from craftlib.training import Trainer, make_optimizer, make_schedule, parameter_groups
from craftlib.verification import embed, evaluate, pair_scores

from .boundary import BoundaryError, Channel, ReplySpec, reply_problem

SPLITS = ("iid", "dirichlet")
FL_STRATEGIES = ("local", "fedavg", "adafedfr", "central", "central_steps")
CENTRAL = ("central", "central_steps")  # one model on the pooled faces (no clients)
CRAFT_MODES = ("none", "server", "client")
FL_STRATEGY_LABELS = {
    "local": "local only",
    "fedavg": "FedAvg (private heads)",
    "adafedfr": "AdaFedFR-style (shared negatives)",
    "central": "centralised (ceiling)",
    "central_steps": "centralised, one site's step count (control)",
}
LOG = logging.getLogger(__name__)  # refused replies are logged here


@dataclass(frozen=True)
class FedConfig:
    """One federated run besides its recipe: who holds what, how long, and which method.

    ``identities`` training identities (first in name order, disjoint from DevTest) are dealt to the
    clients; the next ``public`` identities are the server's public set (AdaFedFR's class
    representations and the server's probe faces for re-activation), held by no client.
    """

    strategy: str = "fedavg"
    split: str = "iid"
    craft: str = "none"
    clients: int = 4
    identities: int = 160
    public: int = 60
    alpha: float = 0.5  # Dirichlet concentration for the skewed split (smaller = more skewed)
    min_identities: int = 4  # every client holds at least this many identities
    rounds: int = 5
    local_epochs: int = 1
    negatives_k: int = 32  # hardest shared negatives per face (AdaFedFR-style)
    negatives_source: str = (
        "public"  # "public": the server's public identities; "clients": other sites' means
    )
    seed: int = 0

    def __post_init__(self):
        for name, value, allowed in (
            ("strategy", self.strategy, FL_STRATEGIES),
            ("split", self.split, SPLITS),
            ("craft", self.craft, CRAFT_MODES),
            ("negatives_source", self.negatives_source, ("public", "clients")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.strategy in CENTRAL and self.craft == "client":
            raise ValueError(
                "craft='client' needs clients; the centralised run re-activates with craft='server'"
            )
        if self.strategy == "local" and self.craft == "server":
            raise ValueError(
                "local-only has no server model; each site re-activates its own with craft='client'"
            )
        if self.clients < 1 or self.rounds < 1 or self.local_epochs < 1:
            raise ValueError("clients, rounds and local_epochs must be >= 1")

    def but(self, **changes) -> "FedConfig":
        return replace(self, **changes)

    @property
    def name(self) -> str:
        split = "all" if self.strategy in CENTRAL else self.split
        return f"{self.strategy}-{split}-{self.craft}-s{self.seed}"


FEDERATED = replace(
    WORKSHOP.but(model__input_size=32, batch_size=32),
    name="federated",
    description="the workshop recipe at 32 px and batch 32 (SGD lr 0.1 one-cycle over all rounds, "
    "wd 1e-2 "
    "on all parameters); CRAFT (silent, tau 0.01) after rounds 1-6 when asked",
)
"""The recipe of the federated study: the workshop recipe at 32 px and batch 32 (small sites need
small batches)."""
FEDERATED_FAST = replace(
    FEDERATED.but(craft={"tau": 0.3}),
    name="federated-fast",
    description="CI smoke budget: the federated recipe with tau 0.3 so that re-activation acts",
)
"""CI / notebook smoke budget (with a FAST ``FedConfig``): every path runs; numbers mean nothing."""
FAST_FED = FedConfig(clients=3, identities=60, public=30, rounds=3, negatives_k=8, min_identities=3)


def mode_banner(recipe: Recipe, fed: FedConfig) -> str:
    """The line notebook 08 prints first, as ``reference.mode_banner`` does in 00-07: the budget,
    and in FAST mode that its numbers mean nothing."""
    budget = (
        f"seed {fed.seed}: {fed.clients} sites, {fed.identities} people, {fed.rounds} rounds of "
        f"{fed.local_epochs} local epoch(s) at {recipe.train.model.input_size} px"
    )
    if recipe.name == FEDERATED_FAST.name:
        return (
            f"FAST mode — recipe {recipe.name!r}, {budget}. Every code path runs, but the numbers "
            "mean nothing (the models stay near the raw-pixel floor); where the text describes a "
            "full run, this output will differ."
        )
    return f"recipe {recipe.name!r}, {budget}: {recipe.description}"


def fast_note(recipe: Recipe) -> str:
    """A tag for outputs that would contradict the prose in FAST mode (empty otherwise), as
    ``reference.fast_note`` in 00-07."""
    return (
        " [FAST mode: a smoke run of a few tiny rounds, not what the text describes]"
        if recipe.name == FEDERATED_FAST.name
        else ""
    )


# ---------------------------------------------------------------------------------------------
# clients from LFW identities


def partition(
    num_identities: int,
    clients: int,
    split: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    min_identities: int = 1,
) -> list[np.ndarray]:
    """Deal identity ids ``0..num_identities-1`` to ``clients`` sites; each identity goes to exactly
    one.

    ``iid``: shuffled and cut into near-equal parts. ``dirichlet``: site shares ``p ~ Dir(alpha)``
    and identity counts ``~ Multinomial(num_identities, p)``, then topped up from the largest site
    so each holds at least ``min_identities`` (face recognition's non-IID: sites differ in *how
    many* people).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if clients * min_identities > num_identities:
        raise ValueError(
            f"{clients} clients x {min_identities} identities need {clients * min_identities}, "
            f"only {num_identities} available"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_identities)
    if split == "iid":
        return [np.sort(part) for part in np.array_split(order, clients)]
    counts = rng.multinomial(num_identities, rng.dirichlet(np.full(clients, float(alpha))))
    while counts.min() < min_identities:
        counts[counts.argmax()] -= 1
        counts[counts.argmin()] += 1
    return [np.sort(part) for part in np.split(order, np.cumsum(counts)[:-1])]


def subset(data: FaceSet, identities) -> FaceSet:
    """The faces of some identities, relabelled ``0..len(identities)-1`` in the order given."""
    identities = [int(i) for i in identities]
    remap = {old: new for new, old in enumerate(identities)}
    keep = np.isin(data.labels, identities)
    return FaceSet(
        data.images[keep],
        np.array([remap[int(y)] for y in data.labels[keep]], dtype=np.int64),
        [data.classes[i] for i in identities],
        [f for f, k in zip(data.files, keep) if k],
    )


@dataclass
class Federation:
    """The data of one federation: each client's faces, the server's public faces, the DevTest
    pairs."""

    clients: list[FaceSet]
    public: FaceSet
    pairs: PairSet
    pool: FaceSet  # every client's faces together: only the centralised ceiling trains on it

    def sizes(self) -> list[tuple[int, int]]:
        """(identities, faces) per client."""
        return [(c.num_classes, len(c.labels)) for c in self.clients]


def federation(lfw: LFW, fed: FedConfig, pairs: PairSet | None = None) -> Federation:
    """Split LFW's first ``fed.identities`` training identities over the clients; the next
    ``fed.public`` are public."""
    data = lfw.training_set(max_identities=fed.identities + fed.public)
    if data.num_classes < fed.identities + fed.public:
        raise ValueError(
            f"LFW offers {data.num_classes} training identities, {fed.identities + fed.public} "
            f"requested"
        )
    pool = subset(data, range(fed.identities))
    parts = partition(
        fed.identities, fed.clients, fed.split, fed.alpha, fed.seed, fed.min_identities
    )
    return Federation(
        [subset(pool, p) for p in parts],
        subset(data, range(fed.identities, data.num_classes)),
        pairs if pairs is not None else lfw.pairs("devtest"),
        pool,
    )


# ---------------------------------------------------------------------------------------------
# the AdaFedFR-style loss: shared class representations as fixed negatives


class SharedNegativesHead(MarginHead):
    """A margin head whose softmax also sees ``k`` shared class representations as extra, fixed
    negatives.

    For each face, the ``k`` shared representations closest to its embedding (the hardest) are
    appended as non-target logits ``s * cos + log(weight)``: in the softmax denominator each counts
    ``weight`` times. No gradient reaches them (they are another site's or the public set's classes,
    not ours to move). Without negatives this is exactly ``MarginHead``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.negatives: torch.Tensor | None = None
        self.k, self.weight_negatives = 0, 1.0

    def share(self, negatives: np.ndarray | None, k: int, weight: float) -> None:
        if negatives is None or len(negatives) == 0 or k <= 0:
            self.negatives = None
            return
        self.negatives = F.normalize(
            torch.as_tensor(np.asarray(negatives, dtype=np.float32)), dim=1
        )
        self.k, self.weight_negatives = min(int(k), len(negatives)), float(weight)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = super().forward(emb, labels)
        if self.negatives is None:
            return logits
        cos = F.linear(F.normalize(emb), self.negatives.to(emb.device))
        hardest = cos.topk(self.k, dim=1).values
        return torch.cat([logits, self.scale * hardest + math.log(self.weight_negatives)], dim=1)


def adaptive_weight(local_classes: int, k: int) -> float:
    """Our adaptive weight of the shared negatives: ``k / (k + C)`` for a site with ``C``
    identities.

    A site with few identities has a weak softmax (few negatives) and leans on the shared ones; a
    site with many leans less. (The paper's exact weighting is not public; see docs/RESULTS.md.)
    """
    return k / (k + local_classes) if k > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# one client's round, as a pure function of (its faces, its private state, what the server sent)


def arrays_of(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """A model's state as NumPy arrays (copies): what a client sends and the server broadcasts."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_arrays(model: torch.nn.Module, arrays: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k: torch.from_numpy(np.asarray(v).copy()) for k, v in arrays.items()})


def _blob(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _unblob(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


def client_trainer(
    data: FaceSet, recipe: Recipe, fed: FedConfig, seed: int, craft_seed: int
) -> Trainer:
    """The client's ``Trainer``: the recipe over all rounds (so the schedule spans the federation),
    a ``SharedNegativesHead``, and with ``craft='client'`` the recipe's CRAFT callback on its own
    faces."""
    epochs = fed.rounds * fed.local_epochs
    config = recipe.train.but(seed=seed, epochs=epochs)
    callbacks = [recipe.craft.callback(craft_seed, epochs)] if fed.craft == "client" else []
    trainer = Trainer(data, config, callbacks, progress=False)
    head = SharedNegativesHead(
        config.model.embedding_dim, data.num_classes, config.head, config.scale, config.margin
    ).to(trainer.device)
    with torch.no_grad():
        head.weight.copy_(trainer.head.weight)
    trainer.head = head
    trainer.optimizer = make_optimizer(parameter_groups(trainer.model, head, config), config)
    trainer.scheduler = make_schedule(trainer.optimizer, config, trainer.total_steps)
    return trainer


def _private_state(trainer: Trainer) -> bytes:
    cb = trainer.callbacks[0] if trainer.callbacks else None
    return _blob(
        {
            "model": trainer.model.state_dict(),
            "head": trainer.head.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "epoch": trainer.epoch,
            "step": trainer.step,
            "events": trainer.events,
            "generator": cb.generator.get_state()
            if cb is not None
            else torch.zeros(0, dtype=torch.uint8),
        }
    )


def _restore(trainer: Trainer, blob: bytes) -> None:
    state = _unblob(blob)
    trainer.model.load_state_dict(state["model"])
    trainer.head.load_state_dict(state["head"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.epoch, trainer.step, trainer.events = state["epoch"], state["step"], state["events"]
    if trainer.callbacks and len(state["generator"]):
        trainer.callbacks[0].generator.set_state(state["generator"])


@torch.no_grad()
def forget_renewed(trainer: Trainer, rows: list[int], spec: CraftSpec) -> None:
    """The server renewed ``rows`` of conv1 by ``spec``: clear this client's optimizer state for
    what surrounds them (``reactivation.surroundings``, as a local re-activation does), so stale
    momentum does not push a renewed filter straight back to zero."""
    if rows:
        forget(
            trainer.optimizer,
            surroundings(*stem_parts(trainer.model), spec.downstream),
            torch.as_tensor(rows),
            spec.reset_step,
        )


def class_means(model: torch.nn.Module, data: FaceSet) -> np.ndarray:
    """Per-identity mean of the L2-normalised embeddings (flip TTA), normalised again: ``C x d``."""
    emb = embed(model, data.images)
    means = np.stack([emb[data.labels == c].mean(0) for c in range(data.num_classes)])
    return (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(
        np.float32
    )


def client_round(
    data: FaceSet,
    blob: bytes | None,
    message: dict,
    recipe: Recipe,
    fed: FedConfig,
    seed: int,
    craft_seed: int,
) -> tuple[dict, bytes]:
    """One client's round. ``message`` is what the server sent (``arrays`` = the global backbone, or
    None for local-only; ``renewed`` = conv1 rows the server re-activated; ``negatives`` = shared
    class representations; ``want_means`` = send this site's class means). Returns ``(reply,
    private_blob)``: the reply crosses to the server, the blob stays with the client."""
    trainer = client_trainer(data, recipe, fed, seed, craft_seed)
    if blob is not None:
        _restore(trainer, blob)
    if message.get("arrays") is not None:
        load_arrays(trainer.model, message["arrays"])
    forget_renewed(trainer, list(message.get("renewed", [])), recipe.craft)
    negatives = message.get("negatives")
    trainer.head.share(
        negatives, fed.negatives_k, adaptive_weight(data.num_classes, fed.negatives_k)
    )
    events_before = len(trainer.events)
    losses = trainer.train_steps(fed.local_epochs * trainer.steps_per_epoch)
    renewed = sorted(
        {f for e in trainer.events[events_before:] if e["strategy"] != "none" for f in e["filters"]}
    )
    reply = {
        "arrays": arrays_of(trainer.model),
        "num_examples": int(len(data.labels)),
        "train_loss": float(np.mean(losses)),
        "train_acc": float(trainer.history[-1]["train_acc"]),
        "silent_fraction": float(
            np.mean(model_scores(trainer.model, "silent", probe=trainer.probe) < SILENT_TAU)
        ),
        "renewed": renewed,
    }
    if message.get("want_means"):
        reply["class_means"] = class_means(trainer.model, data)
    return reply, _private_state(trainer)


# ---------------------------------------------------------------------------------------------
# the server's side


def aggregate(replies: list[dict]) -> dict[str, np.ndarray]:
    """FedAvg: each array's mean over clients weighted by their face counts (accumulated in
    float64).

    Integer buffers (BatchNorm's batch counters) are averaged and rounded. Identical inputs give
    bit-identical output, so K identical clients reproduce one client exactly.
    """
    weights = np.array([r["num_examples"] for r in replies], dtype=np.float64)
    out = {}
    for key, first in replies[0]["arrays"].items():
        total = (
            sum(w * r["arrays"][key].astype(np.float64) for w, r in zip(weights, replies))
            / weights.sum()
        )
        out[key] = (
            np.rint(total).astype(first.dtype)
            if np.issubdtype(first.dtype, np.integer)
            else total.astype(first.dtype)
        )
    return out


def global_model(recipe: Recipe, seed: int) -> FaceCNN:
    """The server's initial model: the same weights a ``Trainer`` with this seed starts from."""
    seed_everything(seed)
    return FaceCNN(recipe.train.model)


def server_reactivate(
    model: FaceCNN, spec: CraftSpec, probe: torch.Tensor, seed: int, round_: int
) -> list[int]:
    """Deterministic re-activation of the aggregated model: same inputs, same generator, same
    weights.

    The probe is the server's *public* faces (no client's); the generator is seeded by (seed,
    round), so re-running the server, or any client repeating it, draws the same new filters.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + round_)
    result = reactivate_model(model, spec, probe=probe, generator=generator)
    return [int(f) for f in result.filters] if spec.strategy != "none" else []


class Server:
    """The server's state across rounds: the global model, the public faces, what to send next.

    ``assigned`` holds ``(identities, faces)`` the server dealt each site: a reply may not claim
    more faces, nor send class means for other identities. Every reply is checked
    (``federated_boundary.reply_problem``); a bad one is refused with a logged reason and the round
    aggregates the others (none: the model stays as it was).
    """

    def __init__(
        self,
        recipe: Recipe,
        fed: FedConfig,
        public: FaceSet,
        pairs: PairSet | None = None,
        assigned: list[tuple[int, int]] | None = None,
    ):
        self.recipe, self.fed, self.public, self.pairs = recipe, fed, public, pairs
        if assigned is None or len(assigned) != fed.clients:
            raise ValueError(
                f"the server needs (identities, faces) for each of its {fed.clients} sites, "
                f"got {assigned!r}"
            )
        self.assigned = [(int(n), int(f)) for n, f in assigned]
        self.model = global_model(recipe, fed.seed)
        self.probe = probe_batch(public.images)
        self.renewed: list[int] = []
        self.negatives: np.ndarray | dict[int, np.ndarray] | None = (
            None  # public means, or each site's
        )
        self.history: list[dict] = []
        self.refused: list[dict] = []  # this round's refusals, moved into its record

    def spec(self, client: int) -> ReplySpec:
        """What a reply from ``client`` must look like this round."""
        identities, faces = self.assigned[client]
        return ReplySpec.of(
            arrays_of(self.model),
            faces=faces,
            identities=identities,
            embedding_dim=self.recipe.train.model.embedding_dim,
            filters=self.model.conv1.out_channels,
            want_means=self._wants_means(),
        )

    def _wants_means(self) -> bool:
        return self.fed.strategy == "adafedfr" and self.fed.negatives_source == "clients"

    def refuse(self, round_: int, client, reason: str) -> None:
        """Leave a reply out of the round: log why and keep the reason in the round's record."""
        LOG.warning("round %d: refused the reply of client %s: %s", round_, client, reason)
        self.refused.append({"client": client, "reason": reason})

    def accept(
        self, round_: int, replies: list[dict], senders: list[int]
    ) -> list[tuple[int, dict]]:
        """The replies that pass ``reply_problem``, one per site in ``range(clients)``, as
        ``(client, reply)``."""
        accepted = []
        for client, reply in zip(senders, replies, strict=True):
            if not (
                isinstance(client, int)
                and not isinstance(client, bool)
                and 0 <= client < self.fed.clients
            ):
                reason = f"no site {client!r} in this federation of {self.fed.clients}"
            elif any(c == client for c, _ in accepted):
                reason = f"site {client} already replied this round"
            else:
                reason = reply_problem(reply, self.spec(client))
            if reason:
                self.refuse(round_, client, reason)
            else:
                accepted.append((client, reply))
        return accepted

    def message(self, client: int) -> dict:
        """What the server sends client ``client`` at the start of a round."""
        msg = {
            "arrays": arrays_of(self.model) if self.fed.strategy != "local" else None,
            "renewed": list(self.renewed),
        }
        if self.fed.strategy == "adafedfr":
            if self.fed.negatives_source == "public":
                # round 1: the initial model's view of the public identities
                if self.negatives is None:
                    self.negatives = class_means(self.model, self.public)
                msg["negatives"] = self.negatives
            else:
                msg["want_means"] = True
                others = [m for i, m in (self.negatives or {}).items() if i != client]
                if others:  # every other site's class means, never the site's own
                    msg["negatives"] = np.concatenate(others)
        return msg

    def finish_round(
        self, round_: int, replies: list[dict], senders: list[int] | None = None
    ) -> dict:
        """Check the replies (``senders[i]`` sent ``replies[i]``; default: in site order), aggregate
        the accepted ones, re-activate (``craft='server'``), prepare the negatives, measure. Returns
        the round's record.

        With no reply accepted the global model, the renewed filters and the negatives stay as they
        were.
        """
        accepted = self.accept(
            round_, replies, list(range(len(replies))) if senders is None else list(senders)
        )
        replies = [r for _, r in accepted]
        if replies:
            if self.fed.strategy != "local":
                load_arrays(self.model, aggregate(replies))
            spec, stop = (
                self.recipe.craft,
                self.recipe.craft.stop_epoch(self.fed.rounds * self.fed.local_epochs),
            )
            act = (
                self.fed.craft == "server"
                and spec.first_epoch <= round_ * self.fed.local_epochs <= stop
            )
            self.renewed = (
                server_reactivate(self.model, spec, self.probe, self.fed.seed, round_)
                if act
                else []
            )
            if self.fed.strategy == "adafedfr":
                self.negatives = (
                    class_means(self.model, self.public)
                    if self.fed.negatives_source == "public"
                    else {c: r["class_means"] for c, r in accepted}
                )
        record = {
            "round": round_,
            "server_renewed": list(self.renewed),
            "clients": [
                {k: v for k, v in r.items() if k not in ("arrays", "class_means")} for r in replies
            ],
        }
        if self.refused:
            record["refused"], self.refused = self.refused, []
        if self.fed.strategy != "local":
            record["global_silent_fraction"] = float(
                np.mean(model_scores(self.model, "silent", probe=self.probe) < SILENT_TAU)
            )
            if self.pairs is not None:
                record["global"] = _verification(self.model, self.pairs)
        self.history.append(record)
        return record


def _verification(model: torch.nn.Module, pairs: PairSet) -> dict:
    report = evaluate(model, pairs)
    return {k: report[k] for k in ("accuracy", "accuracy_std", "auc", "eer")}


# ---------------------------------------------------------------------------------------------
# the in-process federation


class Client:
    """One site: its faces and its private state never leave this object (only ``round`` replies
    do)."""

    def __init__(
        self, cid: int, data: FaceSet, recipe: Recipe, fed: FedConfig, seed: int | None = None
    ):
        self.cid, self._data, self.recipe, self.fed = cid, data, recipe, fed
        self.seed = fed.seed * 1000 + cid if seed is None else seed
        self._blob: bytes | None = None

    @property
    def num_identities(self) -> int:
        return self._data.num_classes

    @property
    def num_faces(self) -> int:
        return len(self._data.labels)

    def round(self, message: dict) -> dict:
        reply, self._blob = client_round(
            self._data, self._blob, message, self.recipe, self.fed, self.seed, self.seed + 7
        )
        return reply

    def model(self) -> FaceCNN:
        """This client's current model (its own weights after its last local training)."""
        model = FaceCNN(self.recipe.train.model)
        model.load_state_dict(_unblob(self._blob)["model"])
        return model

    def silent_fraction(self) -> float:
        return float(
            np.mean(
                model_scores(self.model(), "silent", probe=probe_batch(self._data.images))
                < SILENT_TAU
            )
        )


def run(
    recipe: Recipe,
    fed: FedConfig,
    fedn: Federation,
    clients: list[Client] | None = None,
    channel: Channel | None = None,
    evaluate_clients: bool = False,
    on_round=None,
    log=None,
) -> dict:
    """Train one federated run in this process and return its record (per-round history, final
    numbers).

    ``clients`` overrides the clients built from ``fedn`` (the tests pass identical ones);
    ``channel`` carries every payload (a fresh one is made); ``evaluate_clients`` also verifies each
    client's own model on DevTest every round (the final round always); ``on_round(record, model)``
    is called after each round with the round's record and the global model (``None`` for
    local-only).
    """
    start = time.perf_counter()
    if fed.strategy in CENTRAL:
        return run_central(recipe, fed, fedn, on_round=on_round, log=log)
    channel = channel or Channel(fedn.pool.images.shape[1:])
    clients = clients or [Client(i, c, recipe, fed) for i, c in enumerate(fedn.clients)]
    server = Server(
        recipe, fed, fedn.public, fedn.pairs, [(c.num_identities, c.num_faces) for c in clients]
    )
    for round_ in range(1, fed.rounds + 1):
        replies, senders = [], []
        for c in clients:
            message = channel.send("server", f"client{c.cid}", server.message(c.cid))
            try:
                replies.append(channel.send(f"client{c.cid}", "server", c.round(message)))
                senders.append(c.cid)
            except BoundaryError as err:  # the server refuses it like any other bad reply
                server.refuse(round_, c.cid, str(err))
        record = server.finish_round(round_, replies, senders)
        refused = {r["client"] for r in record.get("refused", [])}
        answered = [c for c in clients if c.cid not in refused]
        if fedn.pairs is not None and (evaluate_clients or round_ == fed.rounds):
            for c, row in zip(answered, record["clients"]):
                row.update(
                    accuracy=_verification(c.model(), fedn.pairs)["accuracy"],
                    identities=c.num_identities,
                )
        if fed.strategy == "local":
            rows = record["clients"]
            record["global"] = (
                {"accuracy": float(np.mean([r["accuracy"] for r in rows]))}
                if rows and "accuracy" in rows[0]
                else None
            )
            record["global_silent_fraction"] = (
                float(np.mean([r["silent_fraction"] for r in rows])) if rows else math.nan
            )
        if log:
            acc = (record.get("global") or {}).get("accuracy")
            log(
                f"  round {round_}/{fed.rounds}: DevTest {'n/a' if acc is None else f'{acc:.2%}'}, "
                f"silent {record['global_silent_fraction']:.0%}, server renewed "
                f"{len(record['server_renewed'])}"
            )
        if on_round:
            on_round(record, server.model if fed.strategy != "local" else None)
    return _record(
        recipe,
        fed,
        server.history,
        time.perf_counter() - start,
        server.model if fed.strategy != "local" else None,
        fedn,
        clients,
    )


def run_central(recipe: Recipe, fed: FedConfig, fedn: Federation, on_round=None, log=None) -> dict:
    """The ceiling: one ``Trainer`` on every client's faces, same recipe, one epoch per round;
    ``craft='server'`` is the recipe's ordinary CRAFT callback (there is one model, so server and
    client coincide).

    ``central_steps`` is the control for decay budget: the batch is ``clients`` times larger, so the
    model takes as many SGD steps (and so as much weight decay) as one site of an even split does,
    on the same faces.
    """
    start = time.perf_counter()
    epochs = fed.rounds * fed.local_epochs
    config = recipe.train.but(seed=fed.seed, epochs=epochs, batch_size=batch_size(recipe, fed))
    callbacks = [recipe.craft.callback(fed.seed, epochs)] if fed.craft == "server" else []
    trainer = Trainer(fedn.pool, config, callbacks, progress=False)
    public_probe = probe_batch(fedn.public.images)
    history = []
    for round_ in range(1, fed.rounds + 1):
        before = len(trainer.events)
        trainer.train_steps(fed.local_epochs * trainer.steps_per_epoch)
        renewed = sorted(
            {f for e in trainer.events[before:] if e["strategy"] != "none" for f in e["filters"]}
        )
        record = {
            "round": round_,
            "server_renewed": renewed,
            "clients": [],
            "global_silent_fraction": float(
                np.mean(model_scores(trainer.model, "silent", probe=public_probe) < SILENT_TAU)
            ),
            "global": _verification(trainer.model, fedn.pairs) if fedn.pairs is not None else None,
        }
        history.append(record)
        if log:
            log(
                f"  round {round_}/{fed.rounds}: DevTest "
                f"{(record['global'] or {}).get('accuracy', float('nan')):.2%}"
            )
        if on_round:
            on_round(record, trainer.model)
    return _record(recipe, fed, history, time.perf_counter() - start, trainer.model, fedn, [])


def batch_size(recipe: Recipe, fed: FedConfig) -> int:
    """The recipe's batch, ``clients`` times larger for ``central_steps`` (one site's step count on
    all faces)."""
    return recipe.train.batch_size * (fed.clients if fed.strategy == "central_steps" else 1)


def sgd_steps(recipe: Recipe, fed: FedConfig, fedn: Federation) -> list[int]:
    """SGD steps each model takes over the whole run (one entry per site, or one for a centralised
    run): the decay budget that decides whether a filter can die (``survival.decay_curve``)."""
    batch = batch_size(recipe, fed)
    faces = [len(fedn.pool.labels)] if fed.strategy in CENTRAL else [f for _, f in fedn.sizes()]
    return [max(1, n // batch) * fed.local_epochs * fed.rounds for n in faces]


def _record(
    recipe: Recipe,
    fed: FedConfig,
    history: list[dict],
    seconds: float,
    model,
    fedn: Federation,
    clients: list[Client],
) -> dict:
    last = history[-1]
    final = {
        "accuracy": (last.get("global") or {}).get("accuracy"),
        "silent_fraction": last["global_silent_fraction"],
    }
    if model is not None:
        final["weight_fraction"] = float(np.mean(model_scores(model, "max") < 0.1))
        # per-pair DevTest scores of the final global model, for pair resampling
        if fedn.pairs is not None:
            final["pair_scores"] = [round(float(v), 6) for v in pair_scores(model, fedn.pairs)]
    if clients:
        final["client_silent_fraction"] = [c.silent_fraction() for c in clients]
        final["client_accuracy"] = [row.get("accuracy") for row in last["clients"]]
    return {
        "name": fed.name,
        "strategy": fed.strategy,
        "split": fed.split,
        "craft": fed.craft,
        "seed": fed.seed,
        "fed": asdict(fed),
        "recipe": recipe.to_dict(),
        "seconds": seconds,
        "threads": torch.get_num_threads(),
        "clients": [{"identities": n, "faces": f} for n, f in fedn.sizes()]
        if fed.strategy not in CENTRAL
        else [],
        "steps": sgd_steps(recipe, fed, fedn),
        "rounds": history,
        "final": final,
    }


# ---------------------------------------------------------------------------------------------
# privacy: what a shared class representation gives away


def retrieval_attack(
    model: torch.nn.Module,
    victims: FaceSet,
    distractors: np.ndarray,
    noise: float = 0.0,
    seed: int = 0,
) -> dict:
    """Can a shared per-identity mean embedding find that person's face in a public gallery?

    For every identity of ``victims`` with >= 3 faces, its mean embedding is taken over all but its
    last face (what a client would share, optionally with Gaussian noise of std ``noise`` per
    dimension before re-normalising); the gallery is those last faces plus the ``distractors``
    (faces of other people). Reports top-1 / top-5 identification rates against chance.
    """
    rng = np.random.default_rng(seed)
    ids = [c for c in range(victims.num_classes) if (victims.labels == c).sum() >= 3]
    emb = embed(model, victims.images)
    queries, gallery_idx = [], []
    for c in ids:
        rows = np.flatnonzero(victims.labels == c)
        queries.append(emb[rows[:-1]].mean(0))
        gallery_idx.append(rows[-1])
    queries = np.stack(queries) + noise * rng.standard_normal((len(ids), emb.shape[1]))
    queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    gallery = np.concatenate([emb[gallery_idx], embed(model, distractors)])
    # faces scoring above the true one
    ranks = (gallery @ queries.T > np.sum(gallery[: len(ids)] * queries, 1)).sum(0)
    return {
        "identities": len(ids),
        "gallery": len(gallery),
        "noise": noise,
        "top1": float(np.mean(ranks < 1)),
        "top5": float(np.mean(ranks < 5)),
        "chance_top1": 1 / len(gallery),
        "chance_top5": min(1.0, 5 / len(gallery)),
    }


def privacy_study(
    recipe: Recipe,
    fed: FedConfig,
    fedn: Federation,
    noises=(0.0, 0.05, 0.1, 0.2),
    distractors: np.ndarray | None = None,
) -> dict:
    """``retrieval_attack`` on a *trained* global model: what sharing per-person means gives away.

    Trains ``fed`` (the ``clients`` variant shares each site's per-person means), then attacks the
    largest site's people with a gallery of their held-out faces plus ``distractors`` (default: the
    first 1,000 DevTest faces, strangers to every site), at each noise level. The model has seen the
    victims' faces, which flatters the attack.
    """
    final = {}
    record = run(recipe, fed, fedn, on_round=lambda rec, model: final.update(model=model))
    site = max(fedn.clients, key=lambda c: c.num_classes)
    gallery = fedn.pairs.images[:1000] if distractors is None else distractors
    return {
        "fed": asdict(fed),
        "accuracy": record["final"]["accuracy"],
        "site_identities": site.num_classes,
        "attacks": [retrieval_attack(final["model"], site, gallery, noise=n) for n in noises],
    }


def privacy_table(blob: dict) -> str:
    """The attack's success per noise level against chance (Markdown)."""
    rows = ["| noise σ per dimension | top-1 | top-5 | chance top-1 / top-5 |", "|---|---|---|---|"]
    for a in blob["attacks"]:
        rows.append(
            f"| {a['noise']:g} | {a['top1']:.0%} | {a['top5']:.0%} | {a['chance_top1']:.2%} / "
            f"{a['chance_top5']:.1%} |"
        )
    a = blob["attacks"][0]
    return "\n".join(rows) + (
        f"\n\n{a['identities']} people of the largest site (of {blob['site_identities']}) with ≥ 3 "
        f"faces; "
        f"gallery of {a['gallery']} faces; global model at DevTest {blob['accuracy']:.1%}."
    )
