"""One interface for what a data source is and where its files lie (``config.sources``, ``data.sources``): the embedded
set and real data differ only there, and nothing else tests a source by its name."""
import ast
import re
from pathlib import Path

import pytest

import lverse_core
from lverse_core.config import CHOICES, SOURCES, MissingAssetError, data_source, derive, load_profile
from lverse_core.data import shapes_dataset
from lverse_core.data import sources as where

PKG = Path(lverse_core.__file__).parent
NOTEBOOKS = PKG.parent / "notebooks"
SMALL = {"data.n_train": 12, "data.n_val": 4, "data.n_test": 4, "data.n_restval": 0, "data.ood_images": 0}


def test_the_table_is_the_schemas_list_of_sources():
    assert tuple(CHOICES["data.source"]) == tuple(SOURCES)
    assert [name for name, s in SOURCES.items() if s.embedded] == ["shapes"]
    assert all(s.ground_truth == s.embedded for s in SOURCES.values())  # today only the embedded set has it


def _name_comparisons(path: Path) -> list[str]:
    """Lines of ``path`` that compare ``<...>.data.source`` with a string literal (== / != / in)."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            reads_source = any(isinstance(s, ast.Attribute) and s.attr == "source"
                               and isinstance(s.value, ast.Attribute) and s.value.attr == "data" for s in sides)
            literal = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides)
            if reads_source and literal:
                out.append(f"{path.name}:{node.lineno}")
    return out


def test_no_module_or_notebook_tests_the_data_source_by_name():
    files = [*PKG.rglob("*.py"), *NOTEBOOKS.glob("*.py")]
    found = [hit for f in files for hit in _name_comparisons(f)]
    assert not found, f"compare data.source by name; ask data_source(cfg) for what it has instead: {found}"


def test_the_name_check_catches_a_comparison(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('if cfg.data.source == "shapes":\n    pass\nok = cfg.data.train_source == "cc3m"\n')
    assert _name_comparisons(bad) == ["bad.py:1"]


def test_assets_of_each_source():
    smoke = load_profile("smoke")
    assert data_source(smoke).assets(smoke) == []
    coco = derive(smoke, **{"data.source": "coco"})
    assert data_source(coco).assets(coco) == ["imagenet_root", "coco_karpathy_json", "coco_root"]
    cc = derive(smoke, **{"data.source": "coco", "data.train_source": "cc3m"})  # L-Verse-CC: CC3M trains
    assert data_source(cc).assets(cc) == ["imagenet_root", "coco_karpathy_json", "coco_root", "cc3m_tsv"]
    wds = derive(smoke, **{"data.source": "wds", "data.train_source": "wds"})
    assert data_source(wds).assets(wds) == ["imagenet_root", "wds_shards"]


def test_real_data_has_no_ground_truth_and_says_who_needs_it(tmp_path):
    cfg = load_profile("ci", **{"data.source": "coco", "data.root": str(tmp_path / "d")})
    with pytest.raises(ValueError, match=r"the attribute judge needs the embedded data set's ground truth.*'coco'"):
        data_source(cfg).require_ground_truth("the attribute judge")
    with pytest.raises(ValueError, match="attributes.json"):
        where.attributes(cfg)


def test_real_data_files_come_from_assets(tmp_path, monkeypatch):
    cfg = load_profile("ci", **{"data.source": "coco", "data.root": str(tmp_path / "d"),
                                "assets.coco_karpathy_json": str(tmp_path / "absent.json")})
    with pytest.raises(MissingAssetError, match="absent.json"):
        where.karpathy_files(cfg)
    assert where.tsv_image_id(cfg, "/x/000123.png", 7) == 7  # a real TSV numbers its rows


def test_embedded_files_are_the_generated_views(tmp_path):
    cfg = load_profile("ci", **{"data.root": str(tmp_path / "ci"), **SMALL})
    with pytest.raises(shapes_dataset.DataSetMissingError, match="notebook 00"):
        where.karpathy_files(cfg)  # a reader never makes the set
    root = shapes_dataset.ensure_dataset(cfg)
    assert where.karpathy_files(cfg) == (root / "dataset_coco.json", root / "images")
    assert where.cc3m_tsv(cfg).is_file() and where.imagefolder(cfg, "test").is_dir()
    assert where.tsv_image_id(cfg, "images/000123.png", 7) == 123  # the set's own ids, as in attributes.json
    attrs = where.attributes(cfg)
    ids = {int(re.sub(r"\D", "", p.stem)) for p in (root / "images").rglob("*.png")}
    assert set(attrs) == ids and all(attrs[i] for i in ids)
