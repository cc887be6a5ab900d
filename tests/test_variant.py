"""Which LFW a folder holds is read from its images, recorded in every run, and a cached run never
crosses variants."""

from __future__ import annotations

import io
import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from craftlib import data
from craftlib.data import LFW, VariantWarning, detect_variant, variant_note


def references() -> list[str]:
    return list(json.loads(data.VARIANT_REFERENCES.read_text())["variants"]["deepfunneled"])


def copy_references(lfw_root: Path, dest: Path, change=None) -> Path:
    """The reference images of the real copy under ``dest``, optionally changed by ``change(image)
    -> image``."""
    src = lfw_root / "lfw-deepfunneled"
    for name in references():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if change is None:
            shutil.copy2(src / name, target)
        else:
            with Image.open(src / name) as im:
                change(im.convert("RGB")).save(target, quality=92)
    return dest


def test_the_real_copy_is_deep_funneled_by_content(lfw_root):
    found = detect_variant(lfw_root / "lfw-deepfunneled")
    assert found.name == "deepfunneled" and found.name == data.DOCS_VARIANT
    assert "8 byte-identical of 8" in found.evidence


def test_reencoded_copy_is_recognised_by_its_pixels(lfw_root, tmp_path):
    def reencode(im):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=75)
        return Image.open(buf)

    folder = copy_references(lfw_root, tmp_path / "some_folder", reencode)
    found = detect_variant(folder)
    assert found.name == "deepfunneled" and "pixel-identical" in found.evidence


def shifted(im):
    """Another alignment of the same photo: 3 px to the side (what a different variant looks like
    here)."""
    return im.transform(im.size, Image.Transform.AFFINE, (1, 0, 3, 0, 1, 2))


def test_a_folder_named_deepfunneled_with_other_images_is_unknown(lfw_root, tmp_path):
    found = detect_variant(copy_references(lfw_root, tmp_path / "lfw-deepfunneled", shifted))
    assert found.name == "unknown" and "differ from deep-funneled" in found.evidence


def test_a_funneled_folder_is_named_by_its_folder_once_content_rules_out_deep_funneled(
    lfw_root, tmp_path
):
    found = detect_variant(copy_references(lfw_root, tmp_path / "lfw_funneled", shifted))
    assert found.name == "funneled"
    assert "8 of 8 reference images differ" in found.evidence and "by folder name" in found.evidence


def test_a_deep_funneled_copy_is_found_whatever_its_folder_is_called(lfw_root, tmp_path):
    assert (
        detect_variant(copy_references(lfw_root, tmp_path / "lfw_funneled")).name == "deepfunneled"
    )


def test_without_reference_images_the_folder_name_is_all_there_is_and_it_says_so(fake_lfw):
    lfw = LFW(fake_lfw(layout="lfw_funneled"), download=False, size=32)
    assert lfw.variant == "funneled" and "folder name only" in lfw.variant_info.evidence


def test_another_variant_warns_once_and_says_what_changes(fake_lfw):
    lfw = LFW(fake_lfw(layout="lfw_funneled"), download=False, size=32)
    with pytest.warns(VariantWarning, match="not the deep-funneled images") as record:
        faces = lfw.training_set()
    assert faces.variant == "funneled"
    assert any(
        "will not match the docs" in str(r.message) for r in record if r.category is VariantWarning
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lfw.training_set()  # once per LFW object
    assert variant_note("deepfunneled") == "" and "deep-funneled" in variant_note("original")


def test_docs_variant_training_set_records_its_variant_without_warning(fake_lfw):
    lfw = LFW(fake_lfw(layout="lfw-deepfunneled"), download=False, size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VariantWarning)
        assert lfw.training_set().variant == "deepfunneled"


def test_a_cached_run_is_not_reused_across_variants(toy_faces, toy_config, tmp_path):
    from craftlib.runs import train_cached

    deep, funneled = (
        replace(toy_faces, variant="deepfunneled"),
        replace(toy_faces, variant="funneled"),
    )
    config = toy_config.but(epochs=1)
    logs: list[str] = []
    train_cached(deep, config, name="r", folder=tmp_path, progress=False, log=logs.append)
    assert logs == [] and len(list(tmp_path.glob("r-*.pt"))) == 1
    train_cached(funneled, config, name="r", folder=tmp_path, progress=False, log=logs.append)
    assert logs == [], "a run trained on deep-funneled LFW was loaded for funneled LFW"
    assert len(list(tmp_path.glob("r-*.pt"))) == 2
    again = train_cached(deep, config, name="r", folder=tmp_path, progress=False, log=logs.append)
    assert logs and "loaded epoch 1" in logs[0] and again.epoch == 1


def test_checkpoints_record_the_variant(toy_faces, toy_config, tmp_path):
    import torch

    from craftlib.training import Trainer

    trainer = Trainer(replace(toy_faces, variant="original"), toy_config, progress=False)
    path = trainer.save(tmp_path / "c.pt")
    assert torch.load(path, weights_only=True)["data_variant"] == "original"


def test_comparison_records_of_two_variants_refuse_to_pool(tmp_path):
    from craftlib.recipes import FAST
    from craftlib.study.experiments import check_folder, fingerprint

    out = tmp_path / "results"
    (out / "records").mkdir(parents=True)
    (out / "records" / "none-s0.json").write_text(
        json.dumps({"arm": "none", "seed": 0, "fingerprint": fingerprint(FAST, "deepfunneled")})
    )
    with pytest.raises(ValueError, match="data_variant: 'deepfunneled' != 'funneled'"):
        check_folder(out, fingerprint(FAST, "funneled"))


def test_download_shows_progress_and_checks_the_checksum(tmp_path, monkeypatch, capsys):
    """The download path (figshare is unreachable here): a fake server, a progress bar, a refused
    bad file."""
    import hashlib
    import urllib.request

    blob = b"x" * 300_000

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(blob))}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(blob))
    target = data._fetch(
        "https://example.invalid/f", hashlib.sha256(blob).hexdigest(), tmp_path / "f.bin"
    )
    assert target.read_bytes() == blob
    assert "f.bin" in capsys.readouterr().err  # tqdm's bar goes to stderr
    with pytest.raises(OSError, match="SHA-256"):
        data._fetch("https://example.invalid/g", "0" * 64, tmp_path / "g.bin")
    assert not (tmp_path / "g.bin").exists() and not (tmp_path / "g.bin.part").exists()
