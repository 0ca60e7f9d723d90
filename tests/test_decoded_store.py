"""The run's decoded store (lverse_core/data/decoded_store.py): notebook 00 decodes every split once; AugVAE's
training split, pre-tokenization, the CLIP reranker and the judge read the same pixels from it instead of decoding
the files again, and fall back to decoding (never writing) when it is missing, stale or does not hold their
images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lverse_core import data
from lverse_core.config import load_profile
from lverse_core.data import decoded_store as store_mod
from lverse_core.data.decoded_store import decoded_split, store_path, write_store
from lverse_core.data.loaders import BadInputError
from lverse_core.data.pixels import uint8_from_signed


def _cfg(synth_dataset, tmp_path, **overrides):
    """The ci profile on the test run's embedded data set (``synth_dataset``), with its own runs folder."""
    return load_profile("ci", runs_dir=str(tmp_path / "runs"), reports_dir=str(tmp_path / "reports"),
                        data={"root": str(synth_dataset.data.root)}, **overrides)


@pytest.fixture
def stored(synth_dataset, tmp_path):
    cfg = _cfg(synth_dataset, tmp_path)
    lines: list[str] = []
    paths = write_store(cfg, log=lines.append)
    return cfg, paths, lines


def _decoded(cfg, split):
    """The split decoded as every stage decoded it before the store: the loader and the eval transform."""
    ds = data.CaptionImageDataset(cfg, split, train=False)
    return torch.stack([uint8_from_signed(ds[i]["image"]) for i in range(len(ds))]), \
        [int(r["image_id"]) for r in ds.records]


def test_every_split_holds_the_pixels_the_loader_gives(stored):
    cfg, paths, lines = stored
    assert sorted(paths) == ["test", "train", "val"]
    assert len(lines) == 1 and "decoded train, val, test once" in lines[0]
    for split in ("train", "val", "test"):
        images, ids = _decoded(cfg, split)
        got = decoded_split(cfg, split)
        assert got is not None and got.ids == ids
        assert got.images.dtype == torch.uint8 and torch.equal(got.images, images)
        assert torch.equal(got.rows(ids[::-1]), images.flip(0))  # by id, in the order asked
        with pytest.raises(KeyError, match="not in the decoded split"):
            got.rows([10 ** 9])


def test_a_current_store_is_kept_and_reads_never_write(stored, synth_dataset, tmp_path):
    cfg, paths, _ = stored
    mtimes = {s: p.stat().st_mtime_ns for s, p in paths.items()}
    write_store(cfg, log=lambda _: None)
    assert {s: p.stat().st_mtime_ns for s, p in paths.items()} == mtimes  # current: not decoded again
    bare = _cfg(synth_dataset, tmp_path / "other")
    assert decoded_split(bare, "train") is None  # no store: the caller decodes
    assert not (bare.runs_root / "decoded").exists()
    assert decoded_split(cfg, "restval") is None  # Karpathy's restval lives in train's store


def test_a_stale_or_changed_store_is_not_used(stored, synth_dataset, tmp_path):
    cfg, paths, _ = stored
    other = _cfg(synth_dataset, tmp_path, **{"data.min_image_side": 2})  # an image setting the store is made under
    lines: list[str] = []
    assert decoded_split(other, "val", log=lines.append) is None
    assert len(lines) == 1 and "not used" in lines[0] and "data.min_image_side" in lines[0]
    store_mod._LOADED.clear()
    raw = bytearray(paths["test"].read_bytes())
    raw[-1] ^= 0xFF  # a file changed after its record
    paths["test"].write_bytes(bytes(raw))
    lines.clear()
    assert decoded_split(cfg, "test", log=lines.append) is None
    assert "changed after its record" in lines[0]


def test_no_store_where_images_are_decoded_per_step(synth_dataset, tmp_path):
    cfg = _cfg(synth_dataset, tmp_path, **{"augvae_train.decode": "per_step"})
    assert write_store(cfg, log=lambda _: None) == {}
    assert decoded_split(cfg, "train") is None and not (cfg.runs_root / "decoded").exists()


def test_a_bad_image_leaves_the_split_to_its_stages(synth_dataset, tmp_path, monkeypatch):
    import lverse_core.data.loaders as L

    cfg = _cfg(synth_dataset, tmp_path)

    def refuse(path, min_side=1):
        raise BadInputError(f"{path}: not an image")

    monkeypatch.setattr(L, "load_image", refuse)
    lines: list[str] = []
    assert store_mod.write_split(cfg, "val", log=lines.append) is None
    assert "not written" in lines[0] and "not an image" in lines[0]
    assert not store_path(cfg, "val").exists()


def _no_decoding(monkeypatch):
    """Every image decode raises: what still works read the store."""
    import lverse_core.data.loaders as L

    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded although the run's store holds it")

    monkeypatch.setattr(L, "load_image", refuse)


def test_the_judge_reads_the_store(stored, synth_dataset, tmp_path, monkeypatch):
    from lverse_core.evaluation.judge import load_split

    cfg, _, _ = stored
    before = load_split(_cfg(synth_dataset, tmp_path / "bare", **{"augvae_train.decode": "per_step"}), "test")
    _no_decoding(monkeypatch)
    after = load_split(cfg, "test")
    assert torch.equal(after[0], before[0]) and after[1:] == before[1:]


def test_augvae_training_images_read_the_store(stored, monkeypatch):
    from lverse_core.data.decoded import DecodedImages
    from lverse_core.training import augvae_train as T

    cfg, _, _ = stored
    folder = data.image_dataset(cfg, "train", train=False)
    expected = DecodedImages.from_dataset(folder).images  # the ImageFolder's order, decoded
    T._DECODED.clear()
    _no_decoding(monkeypatch)
    got = T.training_images(cfg)
    T._DECODED.clear()
    assert torch.equal(got.images, expected)


def test_pretokenization_reads_the_store_and_gives_the_same_codes(stored, synth_dataset, tmp_path, monkeypatch):
    from lverse_core.models.augvae import AugVAE
    from lverse_core.training.pretokenize import pretokenize_split

    cfg, _, _ = stored
    bare = _cfg(synth_dataset, tmp_path / "bare")
    torch.manual_seed(0)
    sl = AugVAE.from_config(cfg, "sl").eval()
    decoded = pretokenize_split(bare, "val", sl, "sha256:test", batch_size=8)
    _no_decoding(monkeypatch)
    stored_codes = pretokenize_split(cfg, "val", sl, "sha256:test", batch_size=8)
    assert np.array_equal(np.load(stored_codes), np.load(decoded))


def test_the_reranker_batches_from_the_store(stored, monkeypatch):
    from lverse_core.sampling.clip_reranker import KeptImages

    cfg, _, _ = stored
    ds = data.CaptionImageDataset(cfg, "train", train=False)
    indices = [5, 0, 17, 5]
    ref_images, ref_captions = KeptImages(ds).batch(indices, "cpu")  # decoded item by item
    _no_decoding(monkeypatch)
    kept = KeptImages(ds, decoded_split(cfg, "train"))
    assert kept.stored is not None
    images, captions = kept.batch(indices, "cpu")
    assert torch.equal(images, ref_images) and captions == ref_captions
    assert torch.equal(kept[17][0], ref_images[2])
    train_view = data.CaptionImageDataset(cfg, "train", train=True)  # random crops: not the store's pixels
    assert not train_view.eval_pixels and data.CaptionImageDataset(cfg, "train").eval_pixels


def test_the_reranker_keeps_the_stored_images_on_its_device(stored, monkeypatch):
    from lverse_core.sampling.clip_reranker import KeptImages

    cfg, _, _ = stored
    ds = data.CaptionImageDataset(cfg, "train", train=False)
    kept = KeptImages(ds, decoded_split(cfg, "train"))
    moved = []
    real_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        if self is kept.stored:
            moved.append(args)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    for _ in range(3):  # the meta device stands in for a GPU
        images, captions = kept.batch([3, 1], "meta")
        assert images.device.type == "meta" and images.shape == (2, 3, cfg.data.image_size, cfg.data.image_size)
        assert images.dtype == torch.float32 and len(captions) == 2
    assert len(moved) == 1  # the whole split copied to the device once, then indexed there
