"""The paper-dry profile: the paper's settings by inheritance, and stand-in assets the paper path's readers accept."""
import pytest
import torch

from lverse_core import config as config_mod
from lverse_core.config import ConfigError, load_profile, require_asset


def test_paper_dry_is_the_paper_profile_with_small_budgets_and_stand_ins():
    dry, paper = load_profile("paper-dry"), load_profile("paper")
    # the paper's architectures, resolution, code paths and scorers: only budgets, device and assets differ
    for section in ("augvae", "biart", "clip"):
        assert getattr(dry, section) == getattr(paper, section)
    assert (dry.data.source, dry.data.image_size) == ("coco", 256) == (paper.data.source, paper.data.image_size)
    assert (dry.eval.fid_extractor, dry.eval.caption_metrics) == ("inception", "nlg-eval")
    assert dry.augvae_train.lpips_weight == paper.augvae_train.lpips_weight > 0
    assert dry.augvae_train.ml_steps <= 2 and dry.biart_train.steps <= 2 and dry.assets.stand_ins
    assert dry.profile == "paper-dry" and str(dry.data_root).endswith("data/paper-dry")
    assert not paper.assets.stand_ins


def test_extends_merges_sections_and_refuses_cycles_and_unknown_bases(tmp_path, monkeypatch):
    (tmp_path / "base.yaml").write_text("profile: base\ndata:\n  n_train: 7\n  n_val: 3\nbiart:\n  n_layer: 3\n")
    (tmp_path / "child.yaml").write_text("extends: base\nprofile: child\ndata:\n  n_val: 5\n")
    (tmp_path / "a.yaml").write_text("extends: b\n")
    (tmp_path / "b.yaml").write_text("extends: a\n")
    (tmp_path / "orphan.yaml").write_text("extends: nowhere\n")
    monkeypatch.setattr(config_mod, "CONFIG_DIR", tmp_path)
    child = load_profile("child")
    assert (child.data.n_train, child.data.n_val, child.biart.n_layer, child.profile) == (7, 5, 3, "child")
    with pytest.raises(ConfigError, match="cycle"):
        load_profile("a")
    with pytest.raises(ConfigError, match="names no profile"):
        load_profile("orphan")


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    import os

    work = tmp_path_factory.mktemp("paper_dry")
    old = os.environ.get("LVERSE_WORKDIR")
    os.environ["LVERSE_WORKDIR"] = str(work)
    try:
        from lverse_core.data.stand_ins import ensure_stand_ins

        cfg = load_profile("paper-dry", **{"data.gen_workers": 1})
        with pytest.raises(config_mod.MissingAssetError, match="not written yet.*--only 00"):
            require_asset(cfg, "clip_vit_b32")
        ensure_stand_ins(cfg)
        yield cfg
    finally:
        if old is None:
            os.environ.pop("LVERSE_WORKDIR")
        else:
            os.environ["LVERSE_WORKDIR"] = old


def test_stand_in_data_is_read_by_the_papers_loaders(dry):
    from lverse_core.data import caption_records, image_dataset

    assert str(require_asset(dry, "coco_karpathy_json")).startswith(str(dry.data_root))
    train, test = caption_records(dry, "train"), caption_records(dry, "test")
    assert (len(train), len(test)) == (dry.data.n_train, dry.data.n_test)
    assert len(caption_records(dry, "train", source="cc3m")) == dry.data.n_train - dry.data.n_val - dry.data.n_test
    x, _ = image_dataset(dry, "val")[0]  # ImageNet's ImageFolder reader
    assert x.shape == (3, 256, 256)


def test_stand_in_weights_load_where_the_real_ones_do(dry):
    from clip.model import build_model

    from lverse_core.models.perceptual import perceptual_loss_from_config
    from lverse_core.sampling.clip_reranker import check_reranker_architecture, read_clip_state

    clip_path = require_asset(dry, "clip_vit_b32")
    state = read_clip_state(clip_path)  # weights_only reader: plain tensors
    check_reranker_architecture(dry, state, clip_path)  # the ViT-B/32 shape check the paper profile applies
    assert build_model(dict(state)).visual.input_resolution == 224
    vgg = perceptual_loss_from_config(dry)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert float(vgg(x, x)) == 0.0 and float(vgg(x, -x)) > 0.0

    import torch_fidelity.feature_extractor_inceptionv3 as fi

    inception = fi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                               feature_extractor_weights_path=str(require_asset(dry, "inception_fid")))
    feats = inception(torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8))[0]
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()


def test_stand_in_weights_are_written_once_and_atomically(dry):
    path = require_asset(dry, "vgg16_lpips")
    stamp = path.stat().st_mtime_ns
    assert require_asset(dry, "vgg16_lpips") == path and path.stat().st_mtime_ns == stamp  # reused, not rewritten
    assert not list(path.parent.glob(".*tmp*"))
    path.unlink()
    from lverse_core.data.stand_ins import ensure_stand_ins

    assert ensure_stand_ins(dry)["vgg16_lpips"] == path and path.exists()  # a missing file is written again
    with pytest.raises(ValueError, match="nothing to write"):
        ensure_stand_ins(load_profile("paper"))


def test_corenlp_has_no_stand_in(dry):
    with pytest.raises(config_mod.MissingAssetError, match="corenlp_dir"):
        require_asset(dry, "corenlp_dir")
