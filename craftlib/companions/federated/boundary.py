"""What may cross between a site and the server, checked on both sides of every hop.

Two checks, one per kind of mistake:

- ``Channel`` / ``check_faces`` (any payload, any direction): no face anywhere in it. The payload is
  walked to the leaves, nested dicts and lists included; only NumPy arrays and plain numbers may sit
  there, and an array (or a list of numbers) that is uint8 or shaped like faces — ``(H, W, 3)``,
  ``(3, H, W)``, ``(H, W)`` planes, or a last axis holding whole flattened faces — is refused with
  ``BoundaryError``.
- ``reply_problem`` (what a client sends the server): exactly the fields a reply has, the global
  model's array names, shapes and dtypes, finite values, counts within what the server assigned to
  that site. The server refuses a reply that fails, with the reason logged, and aggregates without
  it (``federated.Server``).

Together they bound what *structure* crosses. They cannot stop a hostile site from hiding
information in the values of correctly shaped weights (model updates can leak their training data,
e.g. by gradient inversion); that limit is stated in ``docs/SCALE.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

REPLY_FIELDS = frozenset(
    {"arrays", "num_examples", "train_loss", "train_acc", "silent_fraction", "renewed"}
)
"""The fields every client reply carries; ``resumed`` may be added, ``class_means`` only when the
server asked."""
MAX_KEY = 200  # longest dict key accepted (state_dict names are far shorter)


class BoundaryError(RuntimeError):
    """Something other than arrays of a model, embeddings, counts or indices tried to cross."""


def _face_like(shape: tuple[int, ...], face_shape: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` can be read as faces without any reshaping that mixes
    pixels."""
    h, w, c = face_shape
    # flattened, one or many
    whole_faces = len(shape) > 0 and shape[-1] > 0 and shape[-1] % (h * w * c) == 0
    return shape[-3:] in ((h, w, c), (c, h, w)) or shape[-2:] == (h, w) or whole_faces


def check_faces(payload, face_shape: tuple[int, ...] | None, where: str = "payload") -> None:
    """Raise ``BoundaryError`` naming the place in ``payload`` that holds faces or anything but
    arrays/numbers."""
    if isinstance(payload, dict):
        for key, value in payload.items():
            if not isinstance(key, str) or len(key) > MAX_KEY:
                raise BoundaryError(f"{where}: keys must be short strings, got {str(key)[:40]!r}")
            check_faces(value, face_shape, f"{where}[{key!r}]")
        return
    if isinstance(payload, (list, tuple)):
        try:
            numbers = np.asarray(payload)  # nested lists of numbers are an array in disguise
        except ValueError:  # ragged
            numbers = None
        if numbers is not None and numbers.dtype.kind in "biuf":
            check_faces(numbers, face_shape, where)
        else:
            for i, value in enumerate(payload):
                check_faces(value, face_shape, f"{where}[{i}]")
        return
    if payload is None or isinstance(payload, (bool, int, float, np.number, np.bool_)):
        return
    if not isinstance(payload, np.ndarray):
        raise BoundaryError(
            f"{where}: only NumPy arrays and plain numbers cross, got {type(payload).__name__}"
        )
    if payload.dtype.kind not in "biuf":
        raise BoundaryError(f"{where}: arrays of {payload.dtype} do not cross (numbers only)")
    if payload.dtype == np.uint8 or (face_shape and _face_like(payload.shape, tuple(face_shape))):
        raise BoundaryError(
            f"{where} looks like face images ({payload.dtype}, shape {payload.shape}); "
            "faces never leave a client"
        )


class Channel:
    """The only way payloads move between server and clients; it checks each one (``check_faces``)
    and logs it.

    ``face_shape`` is ``(H, W, 3)`` of the faces in play. ``keep_log=False`` checks without keeping
    payloads (a long real deployment).
    """

    def __init__(self, face_shape: tuple[int, ...] | None = None, keep_log: bool = True):
        self.face_shape, self.keep_log = face_shape, keep_log
        self.log: list[dict] = []

    def send(self, sender: str, receiver: str, payload: dict) -> dict:
        if not isinstance(payload, dict):
            raise BoundaryError(
                f"{sender} -> {receiver}: a payload is a dict, got {type(payload).__name__}"
            )
        check_faces(payload, self.face_shape, f"{sender} -> {receiver}")
        if self.keep_log:
            self.log.append({"from": sender, "to": receiver, "payload": payload})
        return payload


@dataclass(frozen=True)
class ReplySpec:
    """What the server accepts from one site in one round.

    ``arrays``: the global model's ``name -> (shape, dtype)``; ``faces`` and ``identities``: what
    the server dealt this site (``num_examples`` may not exceed ``faces``; ``class_means`` has one
    row per identity); ``filters``: conv1's filter count (bounds ``renewed``); ``want_means``:
    whether the server asked for means.
    """

    arrays: dict[str, tuple[tuple[int, ...], np.dtype]]
    faces: int
    identities: int
    embedding_dim: int
    filters: int
    want_means: bool = False

    @classmethod
    def of(cls, arrays: dict[str, np.ndarray], **sizes) -> "ReplySpec":
        return cls({k: (tuple(v.shape), v.dtype) for k, v in arrays.items()}, **sizes)


def _number(value, lo: float = -math.inf, hi: float = math.inf) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(float(value))
        and lo <= float(value) <= hi
    )


def _array_problem(name: str, value, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    if not isinstance(value, np.ndarray):
        return f"{name} is a {type(value).__name__}, not an array"
    if value.shape != shape or value.dtype != dtype:
        return f"{name} is {value.dtype} {value.shape}, expected {dtype} {shape}"
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        return f"{name} holds {int((~np.isfinite(value)).sum())} non-finite values"
    if value.dtype.kind in "iu" and (value < 0).any():
        return f"{name} holds negative counts"
    return None


def reply_problem(reply, spec: ReplySpec) -> str | None:
    """Why the server must refuse ``reply`` (the first reason found), or ``None`` if it may
    aggregate it."""
    if not isinstance(reply, dict):
        return f"a reply is a dict, got {type(reply).__name__}"
    expected = REPLY_FIELDS | ({"class_means"} if spec.want_means else set())
    missing, extra = sorted(expected - set(reply)), sorted(set(reply) - expected - {"resumed"})
    if missing or extra:
        return "fields " + ", ".join(
            [f"missing: {missing}"] * bool(missing) + [f"unexpected: {extra}"] * bool(extra)
        )
    arrays = reply["arrays"]
    if not isinstance(arrays, dict) or set(arrays) != set(spec.arrays):
        names = set(arrays) if isinstance(arrays, dict) else set()
        return (
            f"arrays must be the global model's {len(spec.arrays)} tensors (missing "
            f"{sorted(set(spec.arrays) - names)[:3]}, unexpected "
            f"{sorted(map(str, names - set(spec.arrays)))[:3]})"
        )
    for name, (shape, dtype) in spec.arrays.items():
        if problem := _array_problem(f"arrays[{name!r}]", arrays[name], shape, dtype):
            return problem
    if not (
        _number(reply["num_examples"], 1, spec.faces) and float(reply["num_examples"]).is_integer()
    ):
        return (
            f"num_examples={reply['num_examples']!r}: this site was dealt {spec.faces} faces "
            f"(1..{spec.faces})"
        )
    if not _number(reply["train_loss"]):
        return f"train_loss={reply['train_loss']!r} is not a finite number"
    for field in ("train_acc", "silent_fraction"):
        if not _number(reply[field], 0, 1):
            return f"{field}={reply[field]!r} is not a fraction in [0, 1]"
    renewed = reply["renewed"]
    filters = isinstance(renewed, list) and all(
        _number(f, 0, spec.filters - 1) and float(f).is_integer() for f in renewed
    )
    if not (filters and len(set(map(int, renewed))) == len(renewed)):
        return (
            f"renewed must list distinct conv1 filters in 0..{spec.filters - 1}, got "
            f"{str(renewed)[:80]}"
        )
    if not isinstance(reply.get("resumed", False), (bool, np.bool_)):
        return f"resumed={reply['resumed']!r} is not a boolean"
    if spec.want_means:
        return _array_problem(
            "class_means",
            reply["class_means"],
            (spec.identities, spec.embedding_dim),
            np.dtype(np.float32),
        )
    return None
