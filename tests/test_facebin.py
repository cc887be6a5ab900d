"""Verification .bin files: the standard format round-trips, anything but plain data is refused with
no side effect."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.model_selection import KFold

from craftlib.data import DataError, PairSet
from craftlib.iresnet import build_backbone
from craftlib.models import FaceCNN, ModelConfig
from craftlib.scale.cli import main
from craftlib.scale.facebin import consecutive_folds, read_bin, write_bin
from craftlib.verification import evaluate

SIZE = 16


def synthetic_pairs(n_pairs: int = 20, size: int = SIZE, seed: int = 0) -> PairSet:
    """``n_pairs`` pairs over ``2 n_pairs`` random faces, alternating same/different, in 10 equal
    folds."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (2 * n_pairs, size, size, 3), dtype=np.uint8)
    left = np.arange(0, 2 * n_pairs, 2)
    return PairSet(
        images,
        left,
        left + 1,
        np.arange(n_pairs) % 2 == 0,
        consecutive_folds(n_pairs),
        [f"img{i}" for i in range(2 * n_pairs)],
        "synthetic",
    )


def _dump(path, obj) -> str:
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return str(path)


class Payload:
    """A custom class a hostile or careless .bin might carry."""


class RunsCommand:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):  # unpickled by a plain pickle.load, this runs the command
        return os.system, (self.command,)


def test_round_trip_in_the_standard_format(tmp_path):
    pairs = synthetic_pairs()
    path = write_bin(tmp_path / "lfw.bin", pairs)
    with open(path, "rb") as f:
        bins, issame = pickle.load(f, encoding="bytes")  # insightface's own reader, on our file
    assert len(bins) == 40 and all(type(b) is bytes for b in bins) and issame == list(pairs.same)
    assert Image.open(io.BytesIO(bins[0])).format == "PNG"
    back = read_bin(path, size=SIZE)
    assert np.array_equal(back.images, pairs.images)  # PNG: lossless
    assert np.array_equal(back.same, pairs.same) and np.array_equal(back.folds, pairs.folds)
    assert np.array_equal(back.left, pairs.left) and np.array_equal(back.right, pairs.right)
    assert back.name == "lfw" and len(back) == 20


def test_jpeg_and_resizing(tmp_path):
    path = write_bin(tmp_path / "cfp_fp.bin", synthetic_pairs(size=32), image_format="jpeg")
    back = read_bin(path, size=SIZE)
    assert back.images.shape == (40, SIZE, SIZE, 3) and back.images.dtype == np.uint8


def test_pairs_are_written_fold_by_fold(tmp_path):
    """LFW's View 1 folds interleave; written fold by fold they read back as the same 10 folds."""
    pairs = synthetic_pairs()
    order = np.random.default_rng(1).permutation(20)
    shuffled = PairSet(
        pairs.images,
        pairs.left[order],
        pairs.right[order],
        pairs.same[order],
        pairs.folds[order],
        pairs.files,
    )
    back = read_bin(write_bin(tmp_path / "x.bin", shuffled), size=SIZE)
    for k in range(10):
        assert sorted(
            map(tuple, back.images[back.left[back.folds == k]].reshape(2, -1).tolist())
        ) == sorted(map(tuple, pairs.images[pairs.left[pairs.folds == k]].reshape(2, -1).tolist()))


@pytest.mark.parametrize("n", [20, 25, 6000, 7000])
def test_folds_are_sklearn_kfold_s(n):
    expected = np.empty(n, dtype=int)
    for k, (_, test) in enumerate(KFold(10).split(np.arange(n))):
        expected[test] = k
    assert np.array_equal(consecutive_folds(n), expected)


def test_a_pickled_function_is_refused_and_never_called(tmp_path):
    marker = tmp_path / "pwned"
    path = _dump(tmp_path / "evil.bin", ([RunsCommand(f"touch {marker}")] * 2, [True]))
    with pytest.raises(DataError, match=r"evil\.bin: refused: it names (posix|nt)\.system"):
        read_bin(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, named",
    [
        (Payload(), "test_facebin.Payload"),
        (np.array([True] * 10), "numpy"),
    ],
)
def test_any_other_object_is_refused(tmp_path, payload, named):
    path = _dump(tmp_path / "other.bin", ([b"x"] * 20, payload))
    with pytest.raises(DataError, match=rf"refused: it names .*{named}"):
        read_bin(path)


@pytest.mark.parametrize(
    "obj, message",
    [
        ([b"a"] * 20, "expected a pair"),
        (([b"a"] * 20, [True] * 9 + [2]), "list of bools"),
        ((["not bytes"] * 20, [True] * 10), "bytes"),
        (([b"a"] * 19, [True] * 10), "two images per pair"),
        (([b"a"] * 8, [True] * 4), "at least 10"),
        (({"bins": 1}, [True]), "bytes"),
        (
            ([b"a"] * 20, {True, False}),
            "list of bools",
        ),  # containers the unpickler can build are type-checked after
    ],
)
def test_malformed_content_is_explained(tmp_path, obj, message):
    with pytest.raises(DataError, match=message):
        read_bin(_dump(tmp_path / "bad.bin", obj))


def test_damaged_files_name_the_file(tmp_path):
    good = write_bin(tmp_path / "agedb_30.bin", synthetic_pairs())
    (tmp_path / "cut.bin").write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match=r"cut\.bin: not a readable pickle"):
        read_bin(tmp_path / "cut.bin")
    with pytest.raises(DataError, match=r"missing\.bin: no such file"):
        read_bin(tmp_path / "missing.bin")
    bins, issame = pickle.loads(good.read_bytes())
    bins[7] = b"\xff\xd8 not a jpeg"
    with pytest.raises(DataError, match=r"corrupt\.bin: image 7 \(pair 3\): cannot decode"):
        read_bin(_dump(tmp_path / "corrupt.bin", (bins, issame)))


def test_verification_evaluates_a_bin_unchanged(tmp_path):
    pairs = read_bin(write_bin(tmp_path / "calfw.bin", synthetic_pairs()), size=SIZE)
    report = evaluate(
        FaceCNN(ModelConfig(input_size=SIZE, widths=(8, 8, 8), embedding_dim=16)), pairs
    )
    assert report["n_pairs"] == 20 and len(report["fold_accuracies"]) == 10


@pytest.mark.slow
def test_evaluate_bin_command_on_pixels_and_on_an_arcface_torch_model(tmp_path, capsys):
    """``evaluate-bin`` as docs/SCALE.md shows it, on raw pixels and on a bare iResNet state_dict
    (model.pt)."""
    bins = [
        str(write_bin(tmp_path / f"{name}.bin", synthetic_pairs(seed=k)))
        for k, name in enumerate(("lfw", "cplfw"))
    ]
    assert main(["evaluate-bin", "--bins", *bins, "--size", str(SIZE), "--quiet"]) == 0
    torch.manual_seed(0)
    torch.save(
        build_backbone("iresnet18", input_size=SIZE, num_features=32).state_dict(),
        tmp_path / "model.pt",
    )
    assert (
        main(
            [
                "evaluate-bin",
                "--checkpoint",
                str(tmp_path / "model.pt"),
                "--bins",
                *bins,
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "out"),
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "lfw: accuracy" in out and "cplfw: accuracy" in out and "raw pixels" in out
    assert (tmp_path / "out" / "bin_metrics.json").is_file()
    assert (
        main(["evaluate-bin", "--checkpoint", str(tmp_path / "nothing.pt"), "--bins", *bins]) == 2
    )
