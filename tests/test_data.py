"""Loaders for the real formats: on the generated data, on deliberately broken files, and without real assets."""
import json
import logging
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lverse_core import data
from lverse_core.data import shapes, shapes_dataset
from lverse_core.config import ASSET_ENV, ConfigError, MissingAssetError, derive, load_profile

SMALL = {"data.n_train": 24, "data.n_val": 6, "data.n_test": 6, "data.n_restval": 2, "data.ood_images": 2}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    c = load_profile("ci", **{"data.root": str(tmp_path_factory.mktemp("data") / "ci"), **SMALL})
    shapes_dataset.ensure_dataset(c)
    return c


# -- generated data ------------------------------------------------------------------------------------------------

def test_caption_records_splits(cfg):
    sizes = {split: len(data.caption_records(cfg, split)) for split in ("train", "restval", "val", "test")}
    assert sizes == {"train": 26, "restval": 2, "val": 6, "test": 6}  # train includes restval (Karpathy practice)
    ids = [r["image_id"] for s in ("train", "val", "test") for r in data.caption_records(cfg, s)]
    assert len(ids) == len(set(ids)) == 38
    r = data.caption_records(cfg, "val")[0]
    assert r["path"].is_file() and len(r["captions"]) == cfg.data.captions_per_image
    with pytest.raises(ValueError, match="valid: train, restval, val, test"):
        data.caption_records(cfg, "validation")


def test_caption_dataset_items_and_collate(cfg):
    ds = data.CaptionImageDataset(cfg, "test", train=False)
    item = ds[0]
    s = cfg.data.image_size
    assert item["image"].shape == (3, s, s) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() < item["image"].max() <= 1.0
    # eval: exactly the PNG rescaled to [-1, 1]
    raw = np.asarray(Image.open(ds.records[0]["path"]), dtype=np.float32) / 127.5 - 1
    assert torch.allclose(item["image"], torch.from_numpy(raw).permute(2, 0, 1), atol=1e-6)
    attrs = data.load_attributes(cfg)
    assert all(shapes.caption_correct(c, attrs[item["image_id"]]) for c in item["captions"])
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=data.collate_captions, num_workers=2)))
    assert batch["image"].shape == (4, 3, s, s) and len(batch["captions"]) == 4
    assert batch["image_id"].dtype == torch.long
    train = data.CaptionImageDataset(cfg, "test", train=True)
    torch.manual_seed(0)
    a = train[0]["image"]
    assert a.shape == (3, s, s) and a.min() >= -1 and a.max() <= 1


def test_image_dataset_is_the_imagefolder_view(cfg):
    ds = data.image_dataset(cfg, "train", train=True)
    assert len(ds) == 24 and set(ds.classes) <= set(shapes.SHAPES)
    attrs = data.load_attributes(cfg)
    for i in range(5):
        path, label = ds.samples[i]
        image_id = int(path.rsplit("/", 1)[1][:6])
        assert ds.classes[label] == attrs[image_id][0]["shape"]
    x, label = pickle.loads(pickle.dumps(ds))[0]  # picklable for DataLoader workers
    assert x.shape == (3, cfg.data.image_size, cfg.data.image_size) and x.min() >= -1 and x.max() <= 1


def test_cc3m_view_and_ood(cfg):
    train, val, test = (data.caption_records(cfg, s, source="cc3m") for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (26 - 12, 6, 6)  # the TSV holds train + restval rows
    assert all(len(r["captions"]) == 1 and r["path"].is_file() for r in train)
    attrs = data.load_attributes(cfg)  # the view keeps the set's image ids, so its ground truth lines up
    karpathy = {r["image_id"]: r for r in data.caption_records(cfg, "train")}
    assert all(r["image_id"] in attrs and karpathy[r["image_id"]]["path"] == r["path"] for r in train)
    ood = data.ood_images(cfg)
    assert [n for n, _ in ood] == list(shapes.OOD_SOURCES[:2])
    assert all(t.shape == (3, cfg.data.image_size, cfg.data.image_size) and t.abs().max() <= 1 for _, t in ood)


def test_train_source_cc3m_trains_on_the_whole_tsv_and_evaluates_on_the_source(cfg):
    """L-Verse-CC (Table 3): train and restval from the CC3M TSV (every row), val and test from data.source."""
    cc = derive(cfg, **{"data.train_source": "cc3m"})
    tsv = data.caption_records(cfg, "train", source="cc3m") + data.caption_records(cfg, "val", source="cc3m") \
        + data.caption_records(cfg, "test", source="cc3m")
    train = data.caption_records(cc, "train")
    assert [r["path"] for r in train] == [r["path"] for r in tsv] and all(len(r["captions"]) == 1 for r in train)
    assert data.caption_records(cc, "restval") == []
    for split in ("val", "test"):  # evaluation stays on the Karpathy view of the source
        assert data.caption_records(cc, split) == data.caption_records(cfg, split)
    assert data.caption_records(cc, "train", source="coco") == data.caption_records(cfg, "train")
    with pytest.raises(ConfigError, match="train_source"):
        derive(cfg, **{"data.train_source": "laion"})


# -- colour modes --------------------------------------------------------------------------------------------------

def _save(img, path):
    img.save(path)
    return data.load_image(path)


def test_colour_modes_convert_to_rgb(tmp_path):
    rgba = Image.new("RGBA", (20, 20), (0, 0, 255, 255))
    rgba.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent -> white
    rgba.putpixel((1, 0), (0, 0, 0, 128))  # half transparent black -> mid grey
    out = np.asarray(_save(rgba, tmp_path / "a.png"))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[5, 5]) == (0, 0, 255)
    assert abs(int(out[0, 1, 0]) - 127) <= 1
    assert tuple(np.asarray(_save(Image.new("L", (20, 20), 100), tmp_path / "l.png"))[3, 3]) == (100,) * 3
    la = Image.new("LA", (20, 20), (0, 0))
    assert tuple(np.asarray(_save(la, tmp_path / "la.png"))[0, 0]) == (255,) * 3
    p = Image.new("P", (20, 20), 1)
    p.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    assert tuple(np.asarray(_save(p, tmp_path / "p.png"))[2, 2]) == (200, 30, 40)
    pt = p.copy()
    pt.info["transparency"] = 1
    assert tuple(np.asarray(_save(pt, tmp_path / "pt.png"))[2, 2]) == (255, 255, 255)
    cmyk = Image.new("CMYK", (20, 20), (0, 255, 255, 0))  # red ink
    r = np.asarray(_save(cmyk, tmp_path / "c.jpg"))[5, 5].astype(int)
    assert r[0] > 200 and r[1] < 60 and r[2] < 60
    i16 = Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16))
    assert tuple(np.asarray(_save(i16, tmp_path / "i16.png"))[0, 0]) == (255,) * 3


# -- broken files under both policies ------------------------------------------------------------------------------

def make_coco(cfg, tmp_path, problem, policy):
    """A 4-image Karpathy data set copied from the generated one, with image 1 broken in one way."""
    src = json.loads((cfg.data_root / "dataset_coco.json").read_text())
    images = [im for im in src["images"] if im["split"] == "test"][:4]
    root = tmp_path / "coco"
    (root / "test").mkdir(parents=True)
    for im in images:
        im["filepath"] = "test"
        shutil.copy(cfg.data_root / "images" / "test" / im["filename"], root / "test" / im["filename"])
    bad = root / "test" / images[1]["filename"]
    if problem == "truncated":
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    elif problem == "garbage":
        bad.write_bytes(b"this is not an image")
    elif problem == "tiny":
        Image.new("RGB", (8, 8), (9, 9, 9)).save(bad)
    elif problem == "missing":
        bad.unlink()
    elif problem == "empty_caption":
        images[1]["sentences"][0]["raw"] = "  "
    elif problem == "all_captions_empty":
        for s in images[1]["sentences"]:
            s["raw"] = ""
    elif problem == "cmyk":
        images[1]["filename"] = "cmyk.jpg"
        Image.open(bad).convert("CMYK").save(root / "test" / "cmyk.jpg")
    elif problem == "non_ascii":
        images[1]["sentences"][0]["raw"] = "un petit cercle rouge à gauche d'un grand carré bleu."
    (root / "karpathy.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    c = load_profile("ci", **{"data.root": str(tmp_path / "d"), "data.source": "coco", "data.bad_input": policy,
                              "data.ood_images": 0, "data.min_image_side": 16,
                              "assets.coco_karpathy_json": str(root / "karpathy.json"),
                              "assets.coco_root": str(root)})
    return c, images, bad


@pytest.mark.parametrize("problem, words", [("missing", "missing"), ("empty_caption", "empty caption"),
                                            ("all_captions_empty", "empty caption")])
def test_listing_problems_found_at_construction(cfg, tmp_path, caplog, problem, words):
    c, images, bad = make_coco(cfg, tmp_path, problem, "error")
    with pytest.raises(data.BadInputError, match=words) as e:
        data.caption_records(c, "test")
    assert bad.name in str(e.value) and "bad_input = skip" in str(e.value)
    c, images, bad = make_coco(cfg, tmp_path / "skip", problem, "skip")
    with caplog.at_level(logging.WARNING, logger="lverse_core.data"):
        recs = data.caption_records(c, "test")
    assert "skipped 1 bad input" in caplog.text and bad.name in caplog.text
    if problem == "empty_caption":  # the empty caption goes, the image stays with the others
        assert len(recs) == 4 and len(recs[1]["captions"]) == len(images[1]["sentences"]) - 1
    else:
        assert [r["image_id"] for r in recs] == [images[i]["cocoid"] for i in (0, 2, 3)]


@pytest.mark.parametrize("problem, words", [("truncated", "unreadable or truncated"),
                                            ("garbage", "unreadable or truncated"), ("tiny", "smaller than")])
def test_broken_images_follow_the_policy(cfg, tmp_path, caplog, problem, words):
    c, images, bad = make_coco(cfg, tmp_path, problem, "error")
    ds = data.CaptionImageDataset(c, "test")  # cheap construction: the image is not decoded yet
    assert len(ds) == 4 and ds[0]["image"].shape[0] == 3
    with pytest.raises(data.BadInputError, match=words) as e:
        ds[1]
    assert bad.name in str(e.value)
    with pytest.raises(data.BadInputError, match=words):
        data.caption_records(c, "test", validate=True)
    c, images, bad = make_coco(cfg, tmp_path / "skip", problem, "skip")
    ds = data.CaptionImageDataset(c, "test")
    with caplog.at_level(logging.WARNING, logger="lverse_core.data"):
        assert ds[1]["image_id"] == images[2]["cocoid"]  # the next valid item
    assert bad.name in caplog.text
    assert len(data.CaptionImageDataset(c, "test", validate=True)) == 3


@pytest.mark.parametrize("problem", ["cmyk", "non_ascii"])
def test_acceptable_inputs_are_kept(cfg, tmp_path, problem):
    c, images, bad = make_coco(cfg, tmp_path, problem, "error")
    ds = data.CaptionImageDataset(c, "test", validate=True)
    assert len(ds) == 4
    item = ds[1]
    assert item["image"].shape == (3, c.data.image_size, c.data.image_size)
    assert item["captions"][0] == images[1]["sentences"][0]["raw"]


def test_imagefolder_with_a_broken_file(cfg, tmp_path):
    root = tmp_path / "imagenet"
    shutil.copytree(cfg.data_root / "imagefolder" / "val", root / "val")
    victim = sorted((root / "val").rglob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:50])
    over = {"data.root": str(tmp_path / "d"), "data.source": "coco", "data.ood_images": 0,
            "assets.imagenet_root": str(root)}
    ds = data.image_dataset(load_profile("ci", **over), "test")  # ImageNet's labelled held-out split is val
    idx = [p for p, _ in ds.samples].index(str(victim))
    with pytest.raises(data.BadInputError, match=victim.name):
        ds[idx]
    with pytest.raises(data.BadInputError, match=victim.name):
        data.image_dataset(load_profile("ci", **over), "val", validate=True)
    skip = load_profile("ci", **{**over, "data.bad_input": "skip"})
    ds = data.image_dataset(skip, "val")
    assert ds[idx][0].shape == (3, 32, 32)
    assert len(data.image_dataset(skip, "val", validate=True)) == len(ds) - 1


@pytest.mark.parametrize("change, words", [
    (lambda im: im.pop("split"), "missing key 'split'"),
    (lambda im: im.update(sentences="a red circle."), "'sentences' must be a list, got a string"),
    (lambda im: im.update(cocoid="12x"), "'cocoid' must be an integer, got a string"),
    (lambda im: im.update(cocoid=True), "'cocoid' must be an integer"),
    (lambda im: im.update(filename=7), "'filename' must be a string, got an integer"),
    (lambda im: im["sentences"].__setitem__(0, "text"), r"sentences\[0\]: a sentence must be an object"),
    (lambda im: im.update(split="holdout"), "split 'holdout' is not one of"),
    (lambda im: im.update(filepath="/etc", filename="passwd"), "must be a relative path under the image root"),
    (lambda im: im.update(filepath="../../../etc"), "must be a relative path under the image root"),
])
@pytest.mark.parametrize("policy", ["error", "skip"])  # a broken listing is never skipped silently
def test_every_karpathy_entry_is_schema_checked(cfg, tmp_path, change, words, policy):
    c, images, _ = make_coco(cfg, tmp_path, "none", policy)
    change(images[2])  # not the first entry: the first one is fine
    json_path = tmp_path / "coco" / "karpathy.json"
    json_path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    with pytest.raises(data.BadInputError, match=rf"karpathy.json, images\[2\].*{words}"):
        data.caption_records(c, "test")


def test_duplicate_ids_in_a_karpathy_file_are_refused(cfg, tmp_path):
    c, images, _ = make_coco(cfg, tmp_path, "none", "error")
    images[3]["cocoid"] = images[0]["cocoid"]
    (tmp_path / "coco" / "karpathy.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    with pytest.raises(data.BadInputError, match=r"images\[3\].*is also the id of images\[0\]"):
        data.caption_records(c, "test")


def test_cc3m_tsv_bad_row(cfg, tmp_path):
    tsv = tmp_path / "cc.tsv"
    tsv.write_text("a red circle.\timg/1.png\nno tab here\n")
    c = load_profile("ci", **{"data.root": str(tmp_path / "d"), "data.source": "cc3m", "data.ood_images": 0,
                              "assets.cc3m_tsv": str(tsv)})
    with pytest.raises(data.BadInputError, match="line 2"):
        data.caption_records(c, "train")


def test_cc3m_tsv_encoding_bom_blank_lines(tmp_path):
    from lverse_core.data.loaders import read_cc3m_tsv

    tsv = tmp_path / "cc.tsv"
    tsv.write_bytes("\ufeffa red circle.\timg/1.png\r\n\ntwo blue squares.\timg/2.png\n\n".encode())
    recs = read_cc3m_tsv(tsv)
    assert [r["captions"] for r in recs] == [["a red circle."], ["two blue squares."]]  # no BOM in the caption
    assert [r["image_id"] for r in recs] == [0, 1] and recs[1]["path"] == tmp_path / "img" / "2.png"
    tsv.write_bytes(b"a red circle.\timg/1.png\ncaf\xe9 au lait.\timg/2.png\n")  # Latin-1
    with pytest.raises(data.BadInputError, match=r"cc.tsv, line 2: byte 0xe9 is not UTF-8"):
        read_cc3m_tsv(tsv)


@pytest.mark.parametrize("row, words", [
    ("a red circle.\timg/1.png\tCC-BY", "expected 2 tab-separated columns.*got 3"),
    ("a red circle.\t../../etc/passwd", "relative path under the image root"),
    ("a red circle.\t/etc/passwd", "relative path under the image root"),
])
def test_cc3m_tsv_rows_are_schema_checked(tmp_path, row, words):
    from lverse_core.data.loaders import read_cc3m_tsv

    tsv = tmp_path / "cc.tsv"
    tsv.write_text(f"fine.\timg/0.png\n{row}\n")
    with pytest.raises(data.BadInputError, match=f"cc.tsv, line 2: .*{words}"):
        read_cc3m_tsv(tsv)


# -- real assets that are not here ---------------------------------------------------------------------------------

def test_paper_assets_missing_are_named(tmp_path, monkeypatch):
    for env in ASSET_ENV.values():
        monkeypatch.delenv(env, raising=False)
    paper = load_profile("paper", **{"data.root": str(tmp_path / "p"), "data.ood_images": 0})
    with pytest.raises(MissingAssetError, match="coco_karpathy_json.*LVERSE_COCO_KARPATHY_JSON.*dataset_coco.json"):
        data.caption_records(paper, "test")
    with pytest.raises(MissingAssetError, match="imagenet_root.*ImageNet"):
        data.image_dataset(paper, "val")
    with pytest.raises(MissingAssetError, match="cc3m_tsv"):
        data.caption_records(paper, "train", source="cc3m")
    monkeypatch.setenv("LVERSE_COCO_KARPATHY_JSON", str(tmp_path / "nowhere.json"))
    paper = load_profile("paper", **{"data.root": str(tmp_path / "p"), "data.ood_images": 0})
    with pytest.raises(MissingAssetError, match="nowhere.json, which does not exist"):
        data.caption_records(paper, "test")
    with pytest.raises(ValueError, match=r"attributes.json .*needs the embedded data set.s ground truth"):
        data.load_attributes(paper)


# -- notebook 00 helpers -------------------------------------------------------------------------------------------

def test_data_report_summary(cfg):
    from lverse_core.pipeline import data_report
    from lverse_core.data.tokenizer import TextTokenizer

    info = data_report.prepare(cfg)
    tok = TextTokenizer.build(cfg, [c for r in info["records"]["train"] for c in r["captions"]])
    captions = data_report.caption_table(info["records"], tok)
    objects = data_report.object_table(cfg, info["records"])
    s = data_report.summary(cfg, info, captions, objects, tok)
    assert s["splits"] == {"train": {"images": 26, "captions": 130}, "val": {"images": 6, "captions": 30},
                           "test": {"images": 6, "captions": 30}}
    assert sum(s["objects_per_image"].values()) == 38 and sum(s["size_counts"].values()) == len(objects)
    assert s["bytes_on_disk"] == shapes_dataset.read_marker(cfg.data_root)["bytes"] > 0
    assert s["lengths"]["bpe_tokens"]["max"] == max(tok.lengths(captions["caption"]))
    assert s["lengths"]["truncated_fraction"] == 0.0 and s["vocab_size"] == tok.vocab_size


@pytest.mark.parametrize("read", [
    lambda c: data.image_dataset(c, "train"),
    lambda c: data.load_attributes(c),
    lambda c: data.ood_images(c),
    lambda c: data.loaders.karpathy_source(c),
    lambda c: data.caption_records(c, "test"),
    lambda c: __import__("lverse_core.data.shards", fromlist=["wds_root"]).wds_root(c),
])
def test_readers_never_make_the_data_set_and_name_the_notebook_that_does(tmp_path, read):
    c = load_profile("ci", **{"data.root": str(tmp_path / "data" / "ci"), **SMALL})
    with pytest.raises(shapes_dataset.DataSetMissingError,
                       match=r"no embedded data set at .*data/ci \(no COMPLETE\.json\) for profile ci; notebook 00 "
                             r"makes it: python -m lverse_core run --profile ci --only 00"):
        read(c)
    assert not (tmp_path / "data").exists()  # nothing written, not even a lock


def test_a_reader_refuses_a_data_set_made_with_other_settings_and_says_which(cfg):
    other = load_profile("ci", **{"data.root": str(cfg.data_root), **SMALL, "seed": cfg.seed + 7})
    before = (cfg.data_root / "COMPLETE.json").read_bytes()
    with pytest.raises(shapes_dataset.DataSetMissingError, match=rf"made with other settings \(seed {cfg.seed} -> "
                                                                 rf"{cfg.seed + 7}.*--only 00"):
        data.image_dataset(other, "test")
    assert (cfg.data_root / "COMPLETE.json").read_bytes() == before  # the set that is there is left as it was
