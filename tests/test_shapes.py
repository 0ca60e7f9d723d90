"""The embedded data set: determinism, the real file formats, captions that parse back to the ground truth."""
import colorsys
import csv
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from lverse_core.data import shapes

from lverse_core.data import shapes_dataset
from lverse_core.config import load_profile

SMALL = {"data.n_train": 40, "data.n_val": 8, "data.n_test": 8, "data.n_restval": 4, "data.ood_images": 2}


def small_cfg(root, **extra):
    return load_profile("ci", **{"data.root": str(root), **SMALL, **extra})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    cfg = small_cfg(tmp_path_factory.mktemp("shapes") / "ci")
    return cfg, shapes_dataset.ensure_dataset(cfg)


def files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(dataset, tmp_path):
    cfg, root = dataset
    again = shapes_dataset.ensure_dataset(small_cfg(tmp_path / "again"))
    a, b = files(root), files(again)
    assert a.keys() == b.keys()
    marker_a, marker_b = json.loads(a.pop("COMPLETE.json")), json.loads(b.pop("COMPLETE.json"))
    marker_a.pop("generation_s"), marker_b.pop("generation_s")
    assert marker_a == marker_b
    assert a == b
    other = files(shapes_dataset.ensure_dataset(small_cfg(tmp_path / "other", seed=1)))
    assert other["images/train/000000.png"] != a["images/train/000000.png"]
    assert other["dataset_coco.json"] != a["dataset_coco.json"]


def test_karpathy_schema_and_images(dataset):
    cfg, root = dataset
    tree = json.loads((root / "dataset_coco.json").read_text())
    assert tree["dataset"] == "shapes"
    counts = {s: 0 for s in shapes.SPLITS}
    sentids = []
    for im in tree["images"]:
        assert set(im) == {"filepath", "filename", "imgid", "cocoid", "split", "sentids", "sentences"}
        assert im["split"] in counts and im["filepath"] == im["split"]
        counts[im["split"]] += 1
        assert im["sentids"] == [s["sentid"] for s in im["sentences"]]
        assert len(im["sentences"]) >= cfg.data.captions_per_image
        for s in im["sentences"]:
            assert set(s) == {"raw", "tokens", "imgid", "sentid"} and s["imgid"] == im["imgid"]
            assert s["tokens"] == re.findall(r"[a-z0-9]+", s["raw"].lower()) and s["raw"].endswith(".")
        sentids += im["sentids"]
        with Image.open(root / "images" / im["filepath"] / im["filename"]) as img:
            img.load()
            assert img.mode == "RGB" and img.size == (cfg.data.image_size,) * 2
    assert counts == {"train": 40, "restval": 4, "val": 8, "test": 8}
    assert sentids == list(range(len(sentids)))
    assert len({im["cocoid"] for im in tree["images"]}) == len(tree["images"])


def test_every_caption_parses_back_to_its_objects(dataset):
    cfg, root = dataset
    tree = json.loads((root / "dataset_coco.json").read_text())
    attrs = json.loads((root / "attributes.json").read_text())
    assert attrs["shapes"] == list(shapes.SHAPES) and attrs["colours"] == list(shapes.COLOURS)
    n_objects = set()
    for im in tree["images"]:
        objects = attrs["images"][str(im["cocoid"])]["objects"]
        n_objects.add(len(objects))
        for s in im["sentences"]:
            assert shapes.caption_correct(s["raw"], objects), (s["raw"], objects)
        # a caption with one object's colour changed must be judged wrong
        o = objects[0]
        wrong = next(c for c in shapes.COLOURS if c != o["colour"])
        assert not shapes.caption_correct(im["sentences"][0]["raw"].replace(
            f"{o['size']} {o['colour']} {o['shape']}", f"{o['size']} {wrong} {o['shape']}"), objects)
    assert n_objects == set(range(1, cfg.data.max_objects + 1))


def test_objects_are_whole_under_any_training_crop_and_do_not_overlap(dataset):
    cfg, root = dataset
    s = cfg.data.image_size
    lo, hi = shapes.CROP_SAFE * s, (1 - shapes.CROP_SAFE) * s
    for entry in json.loads((root / "attributes.json").read_text())["images"].values():
        objs = entry["objects"]
        for o in objs:
            x0, y0, x1, y1 = o["bbox"]
            assert lo - 1e-6 <= x0 < x1 <= hi + 1e-6 and lo - 1e-6 <= y0 < y1 <= hi + 1e-6
        for i, a in enumerate(objs):
            for b in objs[i + 1:]:
                ax0, ay0, ax1, ay1 = a["bbox"]
                bx0, by0, bx1, by1 = b["bbox"]
                assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0


def test_background_is_textured_and_unsaturated_objects_are_saturated(dataset):
    cfg, root = dataset
    attrs = json.loads((root / "attributes.json").read_text())["images"]
    for image_id in range(6):
        a = np.asarray(Image.open(root / "images" / "train" / f"{image_id:06d}.png"), dtype=np.float64) / 255
        mask = np.ones(a.shape[:2], bool)
        for o in attrs[str(image_id)]["objects"]:
            x0, y0, x1, y1 = (int(round(v)) for v in o["bbox"])
            mask[max(y0 - 1, 0):y1 + 2, max(x0 - 1, 0):x1 + 2] = False
            cy, cx = int(o["y"]), int(o["x"])
            sat_obj = colorsys.rgb_to_hsv(*a[cy, cx])[1]
            assert sat_obj > 0.6, o
        bg = a[mask]
        sat = (bg.max(1) - bg.min(1)) / np.maximum(bg.max(1), 1e-6)
        assert np.median(sat) < 0.3
        assert bg.std(0).mean() > 0.01  # not flat


def test_imagefolder_hard_links_tsv_and_ood(dataset):
    cfg, root = dataset
    for p in (root / "imagefolder" / "train").rglob("*.png"):
        assert p.parent.name in shapes.SHAPES
        assert os.path.samefile(p, root / "images" / "train" / p.name)
    assert sum(1 for _ in (root / "imagefolder" / "val").rglob("*.png")) == 8
    with open(root / "cc3m_train.tsv", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(rows) == 44 and all(len(r) == 2 and (root / r[1]).is_file() and r[0].endswith(".") for r in rows)
    ood = sorted((root / "ood").glob("*.png"))
    assert [p.stem for p in ood] == sorted(shapes.OOD_SOURCES[:2])
    for p in ood:
        assert Image.open(p).size == (cfg.data.image_size,) * 2


def test_regenerates_on_new_parameters_and_refuses_foreign_directories(tmp_path, monkeypatch):
    root = tmp_path / "d"
    cfg = small_cfg(root, **{"data.n_train": 6, "data.n_val": 2, "data.n_test": 2, "data.n_restval": 0,
                             "data.ood_images": 0})
    shapes_dataset.ensure_dataset(cfg)
    before = (root / "COMPLETE.json").stat().st_mtime_ns
    shapes_dataset.ensure_dataset(cfg)  # same parameters: nothing is rewritten
    assert (root / "COMPLETE.json").stat().st_mtime_ns == before
    cfg2 = small_cfg(root, **{"data.n_train": 7, "data.n_val": 2, "data.n_test": 2, "data.n_restval": 0,
                              "data.ood_images": 0})
    shapes_dataset.ensure_dataset(cfg2)
    assert len(list((root / "images" / "train").iterdir())) == 7
    # a generation killed half way leaves the previous complete set untouched and no temp directory
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(shapes_dataset, "render_scene", boom)
    with pytest.raises(KeyboardInterrupt):
        shapes_dataset.ensure_dataset(cfg)
    assert shapes_dataset.read_marker(root)["params"]["n_train"] == 7
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and "tmp" in p.name] == []
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        shapes_dataset.ensure_dataset(small_cfg(foreign))
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("text, expected", [
    ("a small red circle above a large blue square.", [("small", "red", "circle"), ("large", "blue", "square")]),
    ("There is a Large BLUE square to the right of a small red circle!", [("large", "blue", "square"),
                                                                          ("small", "red", "circle")]),
    ("two small green triangles and a large purple circle.", [("small", "green", "triangle")] * 2
     + [("large", "purple", "circle")]),
    ("a red small circle, honestly shiny.", [("small", "red", "circle")]),
    ("a red circle.", [(None, "red", "circle")]),
    ("nothing here.", []),
])
def test_parse_caption_variants(text, expected):
    got = [(o["size"], o["colour"], o["shape"]) for o in shapes.parse_caption(text)]
    assert sorted(got, key=str) == sorted(expected, key=str)


def test_caption_correct_is_order_free_and_counts():
    objs = [{"shape": "circle", "colour": "red", "size": "small"}, {"shape": "square", "colour": "blue",
                                                                   "size": "large"}]
    assert shapes.caption_correct("a large blue square below a small red circle.", objs)
    assert not shapes.caption_correct("a small red circle.", objs)  # misses one
    assert not shapes.caption_correct("a red circle and a large blue square.", objs)  # size missing
    assert not shapes.caption_correct("a small red circle, a small red circle and a large blue square.", objs)


def test_bad_generation_parameters_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="max_objects"):
        shapes_dataset.ensure_dataset(small_cfg(tmp_path / "x", **{"data.max_objects": 9}))
    with pytest.raises(ValueError, match="ood_images"):
        shapes.write_ood_images(tmp_path / "o", len(shapes.OOD_SOURCES) + 1, 32)


def test_worker_processes_write_the_same_files(dataset, tmp_path, monkeypatch):
    cfg, root = dataset
    monkeypatch.setattr(shapes_dataset, "PARALLEL_MIN_JOBS", 0)
    par = shapes_dataset.ensure_dataset(small_cfg(tmp_path / "par", **{"data.gen_workers": 2}))
    a, b = files(root), files(par)
    a.pop("COMPLETE.json"), b.pop("COMPLETE.json")
    assert a == b


def test_every_ood_photograph_is_available_offline(tmp_path):
    paths = shapes.write_ood_images(tmp_path, len(shapes.OOD_SOURCES), 48)
    assert [p.stem for p in paths] == list(shapes.OOD_SOURCES)
    for p in paths:
        img = Image.open(p)
        assert img.mode == "RGB" and img.size == (48, 48)
        assert np.asarray(img).std() > 5  # a photograph, not a blank


@pytest.mark.parametrize("image_size", [32, 64])
def test_scene_statistics_are_balanced(image_size):
    sizes, counts = {"small": 0, "large": 0}, []
    for i in range(600):
        rng = np.random.default_rng([0, i])
        want = int(np.random.default_rng([0, i]).integers(1, 4))  # the first draw of sample_scene
        objs = shapes.sample_scene(rng, image_size, 3)
        counts.append(want - len(objs))
        for o in objs:
            sizes[o["size"]] += 1
        assert len({(o["size"], o["colour"], o["shape"]) for o in objs}) == len(objs)
    assert min(counts) == 0 and np.mean(counts) < 0.03  # objects dropped for lack of room: rare
    assert abs(sizes["small"] - sizes["large"]) < 0.06 * sum(sizes.values())
