"""LFW discovery, layouts, bad inputs, pair files, identity disjointness and the preprocessing
cache."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import craftlib.data as data
from craftlib.data import (
    LFW,
    DataError,
    LFWNotFoundError,
    Pair,
    find_lfw,
    identities_by_fold,
    load_faces,
    probe_batch,
    read_pairs,
    to_input,
)

# --------------------------------------------------------------------------------------------
# discovery order: argument -> $CRAFTLIB_DATA -> repo data/lfw -> scikit-learn cache -> download


@pytest.fixture
def no_lfw_anywhere(tmp_path, monkeypatch):
    """No env var, an empty repo, an empty scikit-learn home and a download that fails (offline)."""
    calls = []

    def offline():
        calls.append("download")
        raise OSError("network is unreachable (test)")

    monkeypatch.delenv("CRAFTLIB_DATA", raising=False)
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "sk"))
    monkeypatch.setattr(data, "download_lfw", offline)
    return calls


@pytest.fixture
def every_source(fake_lfw, no_lfw_anywhere, monkeypatch):
    """An LFW folder in each of the five places; returns them by name."""
    roots = {
        "argument": fake_lfw(name="arg"),
        "env": fake_lfw(name="env"),
        "repo": fake_lfw(name="repo/data/lfw"),
        "sklearn": fake_lfw(name="sk/lfw_home", layout="lfw_funneled"),
        "download": fake_lfw(name="downloaded"),
    }
    monkeypatch.setenv("CRAFTLIB_DATA", str(roots["env"]))
    monkeypatch.setattr(
        data, "download_lfw", lambda: (no_lfw_anywhere.append("download"), roots["download"])[1]
    )
    return roots


def test_explicit_argument_comes_first(every_source):
    assert find_lfw(every_source["argument"]) == every_source["argument"].resolve()


def test_env_var_beats_repo_and_sklearn(every_source):
    assert find_lfw() == every_source["env"].resolve()


def test_repo_data_beats_sklearn_cache(every_source, monkeypatch):
    monkeypatch.delenv("CRAFTLIB_DATA")
    assert find_lfw() == every_source["repo"].resolve()


def test_sklearn_cache_is_used_before_any_download(every_source, monkeypatch, no_lfw_anywhere):
    monkeypatch.delenv("CRAFTLIB_DATA")
    monkeypatch.setattr(data, "REPO_ROOT", every_source["repo"].parent / "elsewhere")
    assert find_lfw() == every_source["sklearn"].resolve()
    assert no_lfw_anywhere == []


def test_download_is_the_last_resort(every_source, monkeypatch, no_lfw_anywhere):
    monkeypatch.delenv("CRAFTLIB_DATA")
    monkeypatch.setattr(data, "REPO_ROOT", every_source["repo"].parent / "elsewhere")
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(every_source["repo"].parent / "empty_sk"))
    assert find_lfw() == every_source["download"].resolve()
    assert no_lfw_anywhere == ["download"]


def test_candidate_roots_are_listed_in_order(tmp_path, no_lfw_anywhere, monkeypatch):
    monkeypatch.setenv("CRAFTLIB_DATA", str(tmp_path / "env"))
    labels = [label for label, _ in data.candidate_roots(tmp_path / "arg")]
    assert labels == ["argument", "$CRAFTLIB_DATA", "repo data/lfw", "scikit-learn cache"]


def test_offline_without_data_says_how_to_get_lfw(no_lfw_anywhere):
    with pytest.raises(LFWNotFoundError) as err:
        find_lfw()
    msg = str(err.value)
    assert no_lfw_anywhere == ["download"]
    assert "CRAFTLIB_DATA" in msg  # the variable
    assert "lfw-deepfunneled/" in msg and "pairsDevTest.txt" in msg  # the layout
    assert "download_lfw()" in msg  # the download command
    assert "network is unreachable" in msg  # and why the download failed


def test_download_false_never_downloads(no_lfw_anywhere):
    with pytest.raises(LFWNotFoundError, match="download disabled"):
        find_lfw(download=False)
    assert no_lfw_anywhere == []


def test_unusable_explicit_path_is_an_error_not_a_fallthrough(every_source, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LFWNotFoundError) as err:
        find_lfw(empty)
    assert str(empty) in str(err.value) and "CRAFTLIB_DATA" in str(err.value)


def test_unusable_env_path_is_an_error_not_a_fallthrough(every_source, tmp_path, monkeypatch):
    monkeypatch.setenv("CRAFTLIB_DATA", str(tmp_path / "does-not-exist"))
    with pytest.raises(LFWNotFoundError, match="does-not-exist"):
        find_lfw()


# --------------------------------------------------------------------------------------------
# the three image-folder layouts


@pytest.mark.parametrize("layout", ["lfw-deepfunneled", "lfw_funneled", "lfw"])
def test_every_layout_loads(fake_lfw, layout):
    lfw = LFW(fake_lfw(layout=layout), download=False, size=32)
    assert lfw.image_root.name == layout
    assert len(lfw.people) == 5
    train = lfw.training_set()
    assert train.classes == ["Carol_Cc", "Eve_Ee"]  # Alice/Bob are in DevTest, Dave has one image
    assert train.images.shape == (4, 32, 32, 3) and train.images.dtype == np.uint8
    pairs = lfw.pairs("devtest")
    assert len(pairs) == 4 and pairs.same.tolist() == [True, True, False, False]
    assert pairs.images.shape == (len(pairs.files), 32, 32, 3)


def test_image_folder_itself_can_be_the_root(fake_lfw):
    root = fake_lfw()
    lfw = LFW(root / "lfw-deepfunneled", download=False, size=32)
    assert lfw.pair_file("devtest") == root / "pairsDevTest.txt"
    assert len(lfw.pairs("view2")) == 4


def test_non_250px_frames_scale_the_crop_box(fake_lfw):
    lfw = LFW(fake_lfw(size=125), download=False, size=16)
    assert lfw.training_set().images.shape == (4, 16, 16, 3)


# --------------------------------------------------------------------------------------------
# bad inputs: named files and lines, never a bare PIL traceback


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_jpeg_is_a_data_error_naming_the_file(fake_lfw, damage):
    root = fake_lfw()
    bad = root / "lfw-deepfunneled" / "Bob_Bb" / "Bob_Bb_0002.jpg"
    content = bad.read_bytes()
    bad.write_bytes(
        {
            "garbage": b"this is not a jpeg" * 10,
            "truncated": content[: len(content) // 2],
            "empty": b"",
        }[damage]
    )
    with pytest.raises(DataError) as err:
        LFW(root, download=False, size=32).pairs("devtest")
    assert "Bob_Bb_0002.jpg" in str(err.value)
    assert err.value.__suppress_context__  # raised `from None`: no PIL traceback chained on
    assert "re-copy" in str(err.value)


def test_missing_image_names_pair_file_and_line(fake_lfw):
    root = fake_lfw()
    (root / "lfw-deepfunneled" / "Bob_Bb" / "Bob_Bb_0002.jpg").unlink()
    with pytest.raises(DataError) as err:
        LFW(root, download=False, size=32).pairs("devtest")
    assert "pairsDevTest.txt:3" in str(err.value)  # line 3 is "Bob_Bb 1 2"
    assert "Bob_Bb/Bob_Bb_0002.jpg" in str(err.value)


def test_missing_pair_file_explains_the_layout(fake_lfw):
    root = fake_lfw()
    (root / "pairsDevTest.txt").unlink()
    with pytest.raises(DataError, match="pairsDevTest.txt not found") as err:
        LFW(root, download=False, size=32).pairs("devtest")
    assert "CRAFTLIB_DATA" in str(err.value)


def test_unknown_protocol_is_refused(fake_lfw):
    with pytest.raises(ValueError, match="protocol"):
        LFW(fake_lfw(), download=False).pair_file("view3")


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("1\nAlice\t1\nAlice\t1\tBob\t1\n", 2, "expected"),  # wrong field count
        ("1\nAlice\t1\t2\tBob\t3\nAlice\t1\tBob\t1\n", 2, "expected"),  # five fields
        ("1\nAlice\t1\ttwo\nAlice\t1\tBob\t1\n", 2, "not an integer"),
        ("1\nAlice\t1\t2\nAlice\t0\tBob\t1\n", 3, "1-based"),
        ("1\nAlice\t1\t2\nAlice\t-1\tBob\t1\n", 3, "1-based"),
        ("2\nAlice\t1\t2\nAlice\t1\tBob\t1\n", 1, "header promises 4"),  # header count mismatch
        (
            "1\nAlice\t1\tBob\t1\nAlice\t1\t2\n",
            2,
            "different-person pair",
        ),  # same/different order violated
        (
            "2\t1\nA\t1\t2\nA\t1\tB\t1\nA\t1\tB\t2\nA\t1\t2\n",
            4,
            "different-person pair",
        ),  # View 2, fold 2
        ("one\nAlice\t1\t2\nAlice\t1\tBob\t1\n", 1, "header"),
        ("", 1, "empty"),
    ],
)
def test_malformed_pair_file_names_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "pairs_bad.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=words) as err:
        read_pairs(path)
    assert f"pairs_bad.txt:{line}:" in str(err.value)


def test_missing_pair_file_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_pairs(tmp_path / "nope.txt")


def test_fake_pair_files_parse_with_folds(fake_lfw):
    root = fake_lfw()
    pairs = read_pairs(root / "pairs.txt")
    assert [p.fold for p in pairs] == [0, 0, 1, 1]
    assert [p.line for p in pairs] == [2, 3, 4, 5]
    assert (
        pairs[1].left == "Alice_Aa/Alice_Aa_0001.jpg" and pairs[1].right == "Bob_Bb/Bob_Bb_0001.jpg"
    )


# --------------------------------------------------------------------------------------------
# the real pair files


@pytest.mark.parametrize("protocol, n", [("devtrain", 2200), ("devtest", 1000), ("view2", 6000)])
def test_real_pair_files_have_the_official_counts(lfw, protocol, n):
    pairs = read_pairs(lfw.pair_file(protocol))
    assert len(pairs) == n
    assert sum(p.same for p in pairs) == n // 2
    folds = np.array([p.fold for p in pairs])
    assert sorted(set(folds)) == list(range(10))
    for k in range(10):  # every fold: equal numbers of same and different pairs
        in_fold = [p for p in pairs if p.fold == k]
        assert len(in_fold) == n // 10
        assert sum(p.same for p in in_fold) == n // 20


def test_view2_folds_are_identity_disjoint(lfw):
    people = [set() for _ in range(10)]
    for p in read_pairs(lfw.pair_file("view2")):
        people[p.fold] |= {p.left.split("/")[0], p.right.split("/")[0]}
    for a in range(10):
        for b in range(a + 1, 10):
            assert not people[a] & people[b], (a, b)


@pytest.mark.parametrize("protocol", ["devtrain", "devtest"])
def test_view1_folds_are_ten_contiguous_blocks_per_class(lfw, protocol):
    pairs = read_pairs(lfw.pair_file(protocol))
    for same in (True, False):
        folds = [p.fold for p in pairs if p.same == same]
        assert folds == sorted(folds)  # contiguous blocks, in file order
        assert np.bincount(folds).tolist() == [len(folds) // 10] * 10


def test_every_real_pair_image_resolves(devtest):
    assert len(devtest) == 1000 and devtest.folds.max() == 9
    assert devtest.images.shape == (
        1549,
        32,
        32,
        3,
    )  # PROVENANCE.md: DevTest references 1,549 images


def test_thinned_pairs_keep_every_nth_pair_with_its_own_images(devtest):
    """``PairSet.thinned``: the same faces behind each kept pair, both classes and all 10 folds, no
    unused image."""
    thin = devtest.thinned(4)
    assert (
        len(thin) == 250 and set(thin.folds) == set(range(10)) and set(thin.same) == {True, False}
    )
    for i, j in ((0, 0), (1, 4), (249, 996)):
        assert thin.files[thin.left[i]] == devtest.files[devtest.left[j]]
        assert np.array_equal(thin.images[thin.right[i]], devtest.images[devtest.right[j]])
    assert len(thin.images) == len(np.union1d(thin.left, thin.right)) == len(thin.files)


# --------------------------------------------------------------------------------------------
# identity disjointness: no DevTest person is ever a training class


def test_full_training_set_is_disjoint_from_devtest(lfw, monkeypatch):
    monkeypatch.setattr(
        data,
        "load_faces",
        lambda root, names, crop, size, **kw: np.zeros((len(names), size, size, 3), np.uint8),
    )
    train = lfw.training_set()
    assert not set(train.classes) & lfw.pair_identities("devtest")
    assert train.num_classes == 1262 and len(train.files) == 6968  # the counts in PROVENANCE.md
    assert np.bincount(train.labels).min() >= 2
    assert all(f.split("/")[0] == train.classes[y] for f, y in zip(train.files, train.labels))


def test_small_training_set_is_disjoint_and_consistent(faces, lfw):
    assert faces.num_classes == 100 and len(faces.labels) == 567
    assert not set(faces.classes) & lfw.pair_identities("devtest")
    assert faces.images.shape == (len(faces.labels), 32, 32, 3)
    assert all(f.split("/")[0] == faces.classes[y] for f, y in zip(faces.files, faces.labels))


def test_devtest_and_devtrain_share_no_identity(lfw):
    assert not lfw.pair_identities("devtest") & lfw.pair_identities("devtrain")


def test_identities_by_fold():
    pairs = [
        Pair("A/A_0001.jpg", "A/A_0002.jpg", True, 0, 2),
        Pair("B/B_0001.jpg", "C/C_0001.jpg", False, 1, 3),
    ]
    assert identities_by_fold(pairs) == {0: {"A"}, 1: {"B", "C"}}


# --------------------------------------------------------------------------------------------
# which LFW, and which training identities leak into which protocol


@pytest.mark.parametrize(
    "layout, variant",
    [("lfw-deepfunneled", "deepfunneled"), ("lfw_funneled", "funneled"), ("lfw", "original")],
)
def test_variant_is_named_from_the_image_folder(fake_lfw, layout, variant):
    lfw = LFW(fake_lfw(layout=layout), download=False, size=32)
    assert lfw.variant == variant and variant in repr(lfw)


def test_overlap_of_training_identities_with_each_protocol(fake_lfw):
    lfw = LFW(fake_lfw(), download=False, size=32)
    classes = lfw.training_set().classes  # Carol and Eve: outside DevTest by construction
    assert lfw.overlap(classes, "devtest") == set()
    assert lfw.overlap(classes, "devtrain") == {"Carol_Cc", "Eve_Ee"}
    assert lfw.overlap(classes, "view2") == {"Carol_Cc", "Eve_Ee"}
    assert lfw.overlap(["Alice_Aa", "Nobody"], "view2") == {"Alice_Aa"}


def test_the_real_workshop_identities_leak_into_view2_and_devtrain(lfw, monkeypatch):
    """PROVENANCE.md / issue #9: 1,220 of the 1,262 training identities appear in pairs.txt."""
    monkeypatch.setattr(
        data,
        "load_faces",
        lambda root, names, crop, size, **kw: np.zeros((len(names), size, size, 3), np.uint8),
    )
    classes = lfw.training_set().classes
    assert len(lfw.overlap(classes, "view2")) == 1220
    assert len(lfw.overlap(classes, "devtrain")) > 0
    assert lfw.overlap(classes, "devtest") == set()


# --------------------------------------------------------------------------------------------
# the network's input and the probe batch


def test_to_input_is_nchw_in_minus_one_to_one():
    batch = torch.tensor([[[[0, 255, 127]]]], dtype=torch.uint8).expand(2, 4, 5, 3)  # N H W C
    x = to_input(batch.clone())
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.float32
    assert x[0, 0].unique().tolist() == [-1.0] and x[0, 1].unique().tolist() == [1.0]
    assert x[0, 2, 0, 0].item() == pytest.approx(127 / 127.5 - 1)


def test_probe_batch_is_fixed_and_spread_over_the_set():
    images = np.random.default_rng(0).integers(0, 256, (1000, 2, 2, 3), dtype=np.uint8)
    probe = probe_batch(images)
    assert probe.shape == (256, 3, 2, 2)
    assert torch.equal(probe, probe_batch(images))  # fixed, not random
    index = np.linspace(0, 999, 256).round().astype(int)
    # first, last and evenly between
    assert torch.equal(probe, to_input(torch.from_numpy(images[index])))
    assert probe_batch(images, n=8).shape == (8, 3, 2, 2)
    assert probe_batch(images[:10]).shape == (10, 3, 2, 2)  # fewer faces than n: all of them, once


def test_probe_batch_of_the_real_faces(faces):
    probe = probe_batch(faces.images)
    assert probe.shape == (256, 3, 32, 32) and -1 <= probe.min() < probe.max() <= 1


# --------------------------------------------------------------------------------------------
# download: scikit-learn's public fetcher


def test_download_lfw_fetches_scikit_learns_files_with_progress(tmp_path, monkeypatch):
    """The download takes scikit-learn's files (its URLs and SHA-256s) into its folder, with a
    progress bar, and uses no private scikit-learn API (issue #8 asked for public fetchers; #10 for
    progress, which ``fetch_lfw_pairs`` cannot show, so the same published files are fetched
    directly)."""
    import tarfile

    fetched = []

    def fake_fetch(url, sha256, target, progress):
        fetched.append((url, sha256, target.name))
        if target.suffix == ".tgz":
            src = tmp_path / "src" / "lfw_funneled" / "A_B"
            src.mkdir(parents=True)
            (src / "A_B_0001.jpg").write_bytes(b"jpeg")
            with tarfile.open(target, "w:gz") as tar:
                tar.add(src.parent, arcname="lfw_funneled")
        else:
            target.write_text("1\n")
        return target

    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "sk"))
    (tmp_path / "sk" / "lfw_home").mkdir(parents=True)
    monkeypatch.setattr(data, "_fetch", fake_fetch)
    home = data.download_lfw(progress=False)
    assert home == tmp_path / "sk" / "lfw_home"
    assert (home / "lfw_funneled" / "A_B" / "A_B_0001.jpg").is_file() and not (
        home / "lfw-funneled.tgz"
    ).exists()
    assert sorted(name for *_, name in fetched) == sorted(
        ["pairsDevTrain.txt", "pairsDevTest.txt", "pairs.txt", "lfw-funneled.tgz"]
    )
    assert all(len(sha) == 64 for _, sha, _ in fetched)  # every file is checked
    assert "_check_fetch_lfw" not in inspect.getsource(data)  # no private scikit-learn API


# --------------------------------------------------------------------------------------------
# preprocessing and its cache


@pytest.fixture
def counted_load_face(monkeypatch):
    """Wrap ``load_face`` so a test can count the decodes."""
    calls = []
    original = data.load_face

    def counting(path, *args, **kwargs):
        calls.append(Path(path).name)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(data, "load_face", counting)
    return calls


def _faces(root: Path) -> tuple[Path, list[str]]:
    image_root = root / "lfw-deepfunneled"
    return image_root, sorted(str(p.relative_to(image_root)) for p in image_root.glob("*/*.jpg"))


def test_second_load_is_served_from_the_cache(fake_lfw, tmp_cache, counted_load_face, monkeypatch):
    image_root, names = _faces(fake_lfw())
    first = load_faces(image_root, names, size=32)
    assert len(counted_load_face) == len(names) == 10
    assert len(list(tmp_cache.glob("faces-32px-*.npy"))) == 1

    def forbidden(*_args, **_kw):
        raise AssertionError("load_face called although the cache is warm")

    monkeypatch.setattr(data, "load_face", forbidden)
    np.testing.assert_array_equal(load_faces(image_root, names, size=32), first)


@pytest.mark.parametrize("change", ["size", "crop", "mtime", "file list"])
def test_changing_a_pixel_parameter_invalidates_the_cache(
    fake_lfw, tmp_cache, counted_load_face, change
):
    image_root, names = _faces(fake_lfw())
    load_faces(image_root, names, size=32)
    counted_load_face.clear()
    size, crop = 32, data.DEFAULT_CROP
    if change == "size":
        size = 24
    elif change == "crop":
        crop = (60, 60, 190, 190)
    elif change == "mtime":
        st = (image_root / names[0]).stat()
        os.utime(image_root / names[0], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    else:
        names = names[:-1]
    out = load_faces(image_root, names, crop, size)
    assert len(counted_load_face) == len(names)  # decoded again, not served stale
    assert out.shape == (len(names), size, size, 3)
    assert len(list(tmp_cache.glob("faces-*.npy"))) == 2


def test_damaged_cache_file_is_rebuilt(fake_lfw, tmp_cache):
    image_root, names = _faces(fake_lfw())
    first = load_faces(image_root, names, size=32)
    (cached,) = tmp_cache.glob("faces-32px-*.npy")
    cached.write_bytes(b"not numpy")
    np.testing.assert_array_equal(load_faces(image_root, names, size=32), first)


def test_cache_leaves_no_temporary_files(fake_lfw, tmp_cache):
    image_root, names = _faces(fake_lfw())
    load_faces(image_root, names, size=32)
    assert [p.suffix for p in tmp_cache.iterdir()] == [".npy"]


def test_preprocessing_is_deterministic(fake_lfw, tmp_cache):
    image_root, names = _faces(fake_lfw())
    a = load_faces(image_root, names, size=32, cache=False)
    b = load_faces(image_root, names, size=32, cache=False)
    c = load_faces(image_root, names, size=32)  # through the cache: same pixels
    assert a.dtype == np.uint8 and a.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert len(list(tmp_cache.glob("*.npy"))) == 1  # cache=False wrote nothing


def test_real_face_crop_is_deterministic(lfw):
    path = lfw.image_root / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    a, b = data.load_face(path, size=32), data.load_face(path, size=32)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert a.std() > 10  # a real face, not a blank crop


@pytest.mark.parametrize(
    "kwargs", [dict(crop=(100, 0, 50, 250)), dict(crop=(0, 100, 250, 100)), dict(size=4)]
)
def test_bad_crop_or_size_is_refused(fake_lfw, kwargs):
    image_root, names = _faces(fake_lfw())
    with pytest.raises(ValueError):
        load_faces(image_root, names, cache=False, **kwargs)
