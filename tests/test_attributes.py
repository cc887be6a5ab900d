"""LFW attribute labels: parsing with errors that name file and line, discovery, coverage,
identity-disjoint splits."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from craftlib.companions.attributes import labels as A

PEOPLE = {"Alice_Aa": 3, "Bob_Bb": 2, "Carol_Cc": 2, "Dave_Dd": 1, "Eve_Ee": 2}


def write_mat(path, keys, label, names=A.KUMAR_NAMES):
    from scipy.io import savemat

    name = np.empty((1, len(keys)), dtype=object)
    for i, k in enumerate(keys):
        name[0, i] = k.replace("/", "\\")
    attr = np.empty((1, len(names)), dtype=object)
    for i, n in enumerate(names):
        attr[0, i] = n
    savemat(path, {"name": name, "AttrName": attr, "label": np.asarray(label, dtype=np.uint8)})


def keys_of(people=PEOPLE):
    return [f"{p}/{p}_{i:04d}.jpg" for p, n in people.items() for i in range(1, n + 1)]


@pytest.fixture
def label_dir(tmp_path, monkeypatch):
    """A labels folder for the fake LFW's people: Kumar matrix (all but Eve's 2nd image), gender
    lists, smile."""
    monkeypatch.delenv(A.ENV_LABELS, raising=False)
    folder = tmp_path / "lfw_labels"
    folder.mkdir()
    keys = keys_of()[:-1]
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, (len(keys), len(A.KUMAR_NAMES)))
    write_mat(folder / A.KUMAR_MAT, keys, label)
    (folder / A.MALE_LIST).write_text(
        "Bob_Bb_0001.jpg\r\nBob_Bb_0002.jpg\r\nDave_Dd_0001.jpg\r\nCarol_Cc_0001.jpg\r\n"
    )
    (folder / A.FEMALE_LIST).write_text(
        "Carol_Cc_0001.jpg\r\nAlice_Aa_0001.jpg\r\nAlice_Aa_0002.jpg\r\n"
        "Alice_Aa_0003.jpg\r\nCarol_Cc_0002.jpg\r\nEve_Ee_0001.jpg\r\n"
    )
    (folder / A.SMILE_FILE).write_text(
        "./lfw/Alice_Aa/Alice_Aa_0001.jpg 1\n./lfw/Bob_Bb/Bob_Bb_0001.jpg 0\n"
    )
    return folder, keys, label


# ---------------------------------------------------------------------------------------------
# parsing: every bad row is named by file and line


def test_name_list_error_names_file_and_line(tmp_path):
    bad = tmp_path / "male_names.txt"
    bad.write_text("Aaron_Eckhart_0001.jpg\r\nAaron_Eckhart_1.jpg\r\n")
    with pytest.raises(A.LabelError, match=rf"{bad}:2: expected an LFW image name"):
        A.read_name_list(bad)


def test_name_list_duplicate_names_both_lines(tmp_path):
    bad = tmp_path / "female_names.txt"
    bad.write_text("Ann_Bb_0001.jpg\nAnn_Bb_0002.jpg\n\nAnn_Bb_0001.jpg\n")
    with pytest.raises(
        A.LabelError, match=rf"{bad}:4: Ann_Bb_0001.jpg is listed twice \(first on line 1\)"
    ):
        A.read_name_list(bad)


def test_name_list_reads_crlf_and_keys(tmp_path):
    f = tmp_path / "male_names.txt"
    f.write_text("Aaron_Eckhart_0001.jpg\r\nJean-Pierre_Raffarin_0003.jpg\n")
    assert A.read_name_list(f) == {
        "Aaron_Eckhart/Aaron_Eckhart_0001.jpg": 1,
        "Jean-Pierre_Raffarin/Jean-Pierre_Raffarin_0003.jpg": 2,
    }


@pytest.mark.parametrize(
    "line, why",
    [
        ("./lfw/A_B/A_B_0001.jpg 2", "0|1"),
        ("./lfw/A_B/A_B_0001.jpg", "0|1"),
        ("./lfw/A_B/A_B_01.jpg 1", "expected an LFW image name"),
    ],
)
def test_smile_file_errors(tmp_path, line, why):
    f = tmp_path / "lfw_with_smile_label.txt"
    f.write_text(f"./lfw/A_B/A_B_0002.jpg 0\n{line}\n")
    with pytest.raises(A.LabelError, match=rf"{f}:2: .*{why}"):
        A.read_smile_labels(f)


def test_kumar_text_errors_name_the_line(tmp_path):
    f = tmp_path / "lfw_attributes.txt"
    good = "Aaron Eckhart\t1\t" + "\t".join(["0.5"] * 73)
    f.write_text(
        "# comment\n#\tperson\timagenum\t"
        + "\t".join(A.KUMAR_NAMES)
        + f"\n{good}\nAaron Eckhart\t2\t1.0\n"
    )
    with pytest.raises(A.LabelError, match=rf"{f}:4: expected person, imagenum and 73 scores"):
        A.read_kumar_txt(f)
    f.write_text(f"{good}\n" + "Aaron Eckhart\t2\t" + "\t".join(["x"] * 73) + "\n")
    with pytest.raises(A.LabelError, match=rf"{f}:2: could not convert"):
        A.read_kumar_txt(f)
    f.write_text(f"{good}\n" + "Aaron Eckhart\t2\t" + "\t".join(["-0.5"] * 72 + ["2"]) + "\n")
    keys, m = A.read_kumar_txt(f)
    assert keys == ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "Aaron_Eckhart/Aaron_Eckhart_0002.jpg"]
    assert m[0].all() and m[1, -1] == 1 and m[1, :-1].sum() == 0  # label = score > 0


def test_kumar_mat_errors_name_the_row(tmp_path):
    keys = keys_of()
    label = np.zeros((len(keys), 73), dtype=np.uint8)
    f = tmp_path / A.KUMAR_MAT
    label[3, 5] = 7
    write_mat(f, keys, label)
    with pytest.raises(
        A.LabelError, match=rf"{f}: row 4 \(Bob_Bb\\Bob_Bb_0001.jpg\): Child = 7, expected 0 or 1"
    ):
        A.read_kumar_mat(f)
    label[3, 5] = 0
    write_mat(f, keys[:2] + ["Bob_Bb\\Alice_Aa_0001.jpg"] + keys[3:], label)
    with pytest.raises(A.LabelError, match=rf"{f}: row 3: name .* is not"):
        A.read_kumar_mat(f)
    write_mat(f, keys[:-1] + keys[:1], label)
    with pytest.raises(
        A.LabelError,
        match=rf"{f}: row {len(keys)}: Alice_Aa/Alice_Aa_0001.jpg already labelled in row 1",
    ):
        A.read_kumar_mat(f)
    write_mat(f, keys, label[:, :72], names=A.KUMAR_NAMES[:72])
    with pytest.raises(A.LabelError, match=r"AttrName column 73"):
        A.read_kumar_mat(f)
    f.write_bytes(b"not a mat file")
    with pytest.raises(A.LabelError, match=rf"{f}: not a readable MATLAB file"):
        A.read_kumar_mat(f)


# ---------------------------------------------------------------------------------------------
# the table, discovery and coverage


def test_load_labels_merges_files(label_dir):
    folder, keys, label = label_dir
    labels = A.load_labels(folder, download=False)
    assert labels.sources["gender"] == "male_names.txt + female_names.txt"
    got = labels.lookup(keys, ["Male", "Smiling"])
    np.testing.assert_array_equal(got, label[:, [0, 17]])
    gender = labels.lookup(
        ["Bob_Bb/Bob_Bb_0001.jpg", "Alice_Aa/Alice_Aa_0002.jpg", "Eve_Ee/Eve_Ee_0002.jpg"],
        ["gender"],
    )
    assert gender[:, 0].tolist() == [1, 0, A.UNKNOWN]
    # Carol_Cc_0001 is in both lists: female, and the decision is written down
    assert labels.lookup(["Carol_Cc/Carol_Cc_0001.jpg"], ["gender"])[0, 0] == 0
    assert any("both gender lists" in n and "Carol_Cc_0001" in n for n in labels.notes)
    assert labels.lookup(["Alice_Aa/Alice_Aa_0001.jpg"], ["smile"])[0, 0] == 1
    with pytest.raises(KeyError, match="no label column"):
        labels.lookup(keys, ["Hair_Colour"])


def test_gender_falls_back_to_kumar(label_dir):
    folder, keys, label = label_dir
    (folder / A.FEMALE_LIST).unlink()
    labels = A.load_labels(folder, download=False)
    assert "classifier output" in labels.sources["gender"]
    np.testing.assert_array_equal(labels.lookup(keys, ["gender"])[:, 0], label[:, 0])
    assert any("not found" in n for n in labels.notes)


def test_discovery_order(label_dir, tmp_path, monkeypatch):
    folder, *_ = label_dir
    monkeypatch.setenv(A.ENV_LABELS, str(folder))
    assert A.find_labels(download=False) == folder.resolve()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(A.LabelsNotFoundError, match=r"argument points to .*empty"):
        A.find_labels(empty, download=False)
    monkeypatch.setenv(A.ENV_LABELS, str(empty))
    with pytest.raises(A.LabelsNotFoundError, match=rf"\${A.ENV_LABELS} points to"):
        A.find_labels(download=False)
    monkeypatch.delenv(A.ENV_LABELS)
    lfw = tmp_path / "lfw"
    lfw.mkdir()
    monkeypatch.setenv("CRAFTLIB_DATA", str(lfw))
    monkeypatch.setattr(A, "REPO_ROOT", tmp_path / "repo")
    assert A.find_labels(download=False) == folder.resolve()  # lfw_labels beside the LFW folder
    monkeypatch.setenv("CRAFTLIB_DATA", str(tmp_path / "elsewhere" / "lfw"))
    with pytest.raises(A.LabelsNotFoundError, match="download disabled"):
        A.find_labels(download=False)


def test_download_checks_the_hash(tmp_path, monkeypatch):
    import io
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=0: io.BytesIO(b"tampered"))
    with pytest.raises(A.LabelError, match="SHA-256 .* does not match"):
        A.download_labels(tmp_path)
    assert not (tmp_path / A.KUMAR_MAT).exists()


def test_coverage_counts_images_without_labels(label_dir):
    folder, keys, _ = label_dir
    labels = A.load_labels(folder, download=False)
    files = keys_of() + ["Zed_Zz/Zed_Zz_0001.jpg"]
    cov = A.coverage(labels, files)
    assert cov["images"] == len(files)
    # Zed, and Eve's 2nd image: in no list and without a Kumar row
    assert cov["no_label_at_all"] == 2
    assert cov["attributes"]["smiling"]["missing"] == 2
    assert cov["attributes"]["male"]["missing"] == 2  # Eve_Ee_0002 and Zed are in neither list
    assert cov["attributes"]["male"]["labelled"] + cov["attributes"]["male"]["missing"] == len(
        files
    )
    text = A.coverage_report(cov)
    assert "2 without any label" in text and "both gender lists" in text


def test_attribute_matrix_ors_columns(label_dir):
    folder, keys, label = label_dir
    labels = A.load_labels(folder, download=False)
    y = A.attribute_matrix(labels, keys, [A.ATTRIBUTES["mouth_open"], A.ATTRIBUTES["eyeglasses"]])
    cols = {n: i for i, n in enumerate(A.KUMAR_NAMES)}
    want = label[:, cols["Mouth_Slightly_Open"]] | label[:, cols["Mouth_Wide_Open"]]
    np.testing.assert_array_equal(y[:, 0], want)


# ---------------------------------------------------------------------------------------------
# identity-disjoint splits


def test_training_identities_match_the_training_set(fake_lfw):
    from craftlib.data import LFW

    lfw = LFW(fake_lfw(), download=False, size=16)
    assert A.training_identities(lfw) == set(lfw.training_set().classes) == {"Carol_Cc", "Eve_Ee"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=2, max_size=200),
    st.floats(0.05, 0.95),
    st.integers(0, 10_000),
)
def test_identity_split_is_disjoint_and_complete(ids, fraction, seed):
    ids = np.array([f"P{i}" for i in ids])
    if len(np.unique(ids)) < 2:
        with pytest.raises(ValueError):
            A.identity_split(ids, fraction, seed)
        return
    train, test = A.identity_split(ids, fraction, seed)
    assert not set(ids[train]) & set(ids[test])
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(ids)))
    assert len(train) and len(test)


def test_check_disjoint_names_the_people():
    ids = np.array(["A", "A", "B", "C"])
    with pytest.raises(ValueError, match="1 people on both sides"):
        A.check_disjoint(ids, [0, 2], [1, 3])


# ---------------------------------------------------------------------------------------------
# the real labels (skipped without them)


@pytest.fixture(scope="module")
def real_labels():
    for var in (A.ENV_LABELS, "CRAFTLIB_DATA"):
        if os.environ.get(var):
            break
    else:
        pytest.skip("neither CRAFTLIB_LABELS nor CRAFTLIB_DATA is set")
    try:
        return A.load_labels(download=False)
    except A.LabelsNotFoundError as err:
        pytest.skip(str(err))


@pytest.mark.slow
def test_real_labels_and_probe_set(real_labels, lfw):
    """The shared labels parse; the probe set holds only people LFW's training set never uses, split
    by person."""
    assert len(real_labels.names) >= 74 and "gender" in real_labels.names
    train = lfw.training_set()
    assert A.training_identities(lfw) == set(train.classes)
    probe = A.probe_set(lfw, real_labels, max_identities=400)
    assert not set(probe.identities) & set(train.classes)
    A.check_disjoint(probe.identities, probe.train_idx, probe.test_idx)
    assert not set(probe.identities[probe.train_idx]) & set(probe.identities[probe.test_idx])
    share_male = (probe.y[:, probe.attribute_names.index("male")] == 1).mean()
    assert 0.6 < share_male < 0.9  # LFW is about 78% men
    assert probe.coverage["attributes"]["male"]["labelled"] >= 0.99 * probe.coverage["images"]
