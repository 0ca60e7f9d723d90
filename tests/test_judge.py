"""The attribute judge: it learns, decodes counts into object multi-sets, and round-trips through its checkpoint."""
from __future__ import annotations

import pytest
import torch

import synthetic_scenes as syn
from lverse_core.evaluation.judge import (JudgeNet, image_matches, judge_accuracy, judge_path, load_judge, load_judge_file,
                               same_objects, train_judge)
from lverse_core.training.loop import CheckpointError, load_checkpoint, save_checkpoint


def test_judge_learns_well_above_chance(trained_judge, synth_data):
    judge, _, losses = trained_judge
    _, _, xt, ot = synth_data
    assert sum(losses[-20:]) / 20 < 0.5 * losses[0]
    acc = judge_accuracy(judge, xt, ot)
    # Chance of guessing a whole scene (1-2 of 24 object kinds) is below 1%.
    assert acc["exact"] > 0.3, acc
    assert acc["object_precision"] > 0.7, acc


def _tiny_judge() -> JudgeNet:
    return JudgeNet(syn.SHAPES, syn.COLOURS, syn.SIZES, image_size=32, width=8, feature_dim=16)


def test_targets_decode_to_the_same_multiset():
    judge = _tiny_judge()
    scenes = [[{"shape": "circle", "colour": "red", "size": "small", "x": 5.0, "y": 5.0},
               {"shape": "circle", "colour": "red", "size": "small", "x": 27.0, "y": 20.0}],
              [{"shape": "square", "colour": "blue", "size": "large", "x": 16.0, "y": 16.0},
               {"shape": "triangle", "colour": "yellow", "size": "small", "x": 31.9, "y": 0.0}], []]
    t = judge.targets(scenes, source_size=32)  # (3, 4, 8, 8)
    assert t.shape == (3, 4, 8, 8)
    assert t[:, 0].sum(dim=(1, 2)).tolist() == [2, 2, 0]
    assert t[1, :, 4, 4].tolist() == [1, syn.COLOURS.index("blue"), syn.SHAPES.index("square"), 1]
    # Centres are scaled from the source size: the same scene described at 64 px lands in the same cells.
    scaled = [[{**o, "x": 2 * o["x"], "y": 2 * o["y"]} for o in objs] for objs in scenes]
    assert torch.equal(judge.targets(scaled, source_size=64), t)
    # Logits that are confident about exactly the targets decode to the same scenes.
    nc, ns, nz = len(syn.COLOURS), len(syn.SHAPES), len(syn.SIZES)
    logits = torch.full((3, 1 + nc + ns + nz, 8, 8), -10.0)
    logits[:, 0] = torch.where(t[:, 0] == 1, 10.0, -10.0)
    for k, (off, n) in enumerate(((1, nc), (1 + nc, ns), (1 + nc + ns, nz))):
        onehot = torch.nn.functional.one_hot(t[:, 1 + k].clamp(min=0), n).permute(0, 3, 1, 2).float()
        logits[:, off:off + n] = 20 * onehot - 10
    judge.forward = lambda x: logits  # decode the hand-made logits
    for got, want in zip(judge.judge_image(torch.zeros(3, 3, 32, 32)), scenes):
        assert same_objects(got, want), (got, want)
    assert judge.loss(logits, t) < 0.01


def test_duplicate_detections_of_one_object_are_merged():
    judge = _tiny_judge()
    nc, ns, nz = len(syn.COLOURS), len(syn.SHAPES), len(syn.SIZES)
    logits = torch.full((1, 1 + nc + ns + nz, 8, 8), -10.0)
    logits[0, 1 + 0] = 10  # red everywhere
    logits[0, 1 + nc + 0] = 10  # circle
    logits[0, 1 + nc + ns + 0] = 10  # small
    logits[0, 0, 3, 3], logits[0, 0, 3, 4] = 5.0, 3.0  # one object seen by two neighbouring cells
    logits[0, 0, 6, 6] = 4.0  # and a second, distinct red circle far away
    logits[0, 1 + 1, 2, 2] = 30  # a green small circle next to the first: kept, it is another object
    logits[0, 0, 2, 2] = 2.0
    judge.forward = lambda x: logits
    got = judge.judge_image(torch.zeros(1, 3, 32, 32))[0]
    assert sorted(o["colour"] for o in got) == ["green", "red", "red"]


def test_unknown_attribute_is_an_error():
    judge = _tiny_judge()
    with pytest.raises(ValueError, match="vocabulary"):
        judge.targets([[{"shape": "hexagon", "colour": "red", "size": "small", "x": 1, "y": 1}]], 32)


def test_checkpoint_round_trip(trained_judge, synth_cfg, synth_data):
    judge, path, _ = trained_judge
    x = synth_data[2][:8].float() / 127.5 - 1
    again = load_judge_file(path)
    torch.testing.assert_close(again.features(x), judge.features(x))
    assert again.judge_image(x) == judge.judge_image(x)


def test_other_sizes_are_resized(trained_judge, synth_data):
    judge, _, _ = trained_judge
    x = synth_data[2][:4].float() / 127.5 - 1
    big = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    assert judge.features(big).shape == judge.features(x).shape


def test_foreign_checkpoint_is_refused(tmp_path, synth_cfg):
    bad = save_checkpoint(tmp_path / "x.pt", {"kind": "biart", "model": {}})
    with pytest.raises(CheckpointError, match="'judge'"):
        load_judge_file(bad)
    broken = save_checkpoint(tmp_path / "y.pt", {"kind": "judge", "model": {}, "model_args": {"shapes": []}})
    with pytest.raises(CheckpointError, match="retrain"):
        load_judge_file(broken)
    other = synth_cfg.__class__(**{**synth_cfg.__dict__, "runs_dir": str(tmp_path / "none")})
    with pytest.raises(CheckpointError, match="train_judge"):
        load_judge(other)


def test_image_matches_uses_the_caption_parser():
    objs = [{"shape": "circle", "colour": "red", "size": "small"},
            {"shape": "square", "colour": "blue", "size": "large"}]
    assert image_matches(objs, "a small red circle to the left of a large blue square.")
    assert not image_matches(objs[:1], "a small red circle to the left of a large blue square.")
    assert not image_matches(objs, "a small red circle.")


def test_train_judge_on_real_ci_images(synth_cfg):
    """The real pipeline: embedded ci data (256 training images), train, score on real test images, save."""
    judge, m = train_judge(synth_cfg, log=True)
    # Chance of naming a whole scene (1-3 of 36 object kinds) is far below 1%.
    assert m["test_exact"] > 0.15 and m["test_object_recall"] > 0.5, m
    assert m["train_loss_last"] < 0.3 * m["train_loss_first"], m
    state = load_checkpoint(judge_path(synth_cfg), "judge")
    assert state["metrics"]["test_exact"] == m["test_exact"]
    assert (synth_cfg.runs_root / "logs" / "judge.csv").exists()
    x = torch.zeros(2, 3, 32, 32)
    torch.testing.assert_close(load_judge(synth_cfg).features(x), judge.features(x))


def test_ensure_judge_rebuilds_a_stale_checkpoint(synth_cfg, monkeypatch):
    import lverse_core.evaluation.judge as J

    path = judge_path(synth_cfg)
    calls = []
    monkeypatch.setattr(J, "train_judge", lambda cfg: calls.append(cfg) or ("retrained", {}))
    if path.exists():  # written by test_train_judge_on_real_ci_images: current, so it is loaded
        assert isinstance(J.ensure_judge(synth_cfg), JudgeNet) and not calls
    save_checkpoint(path, {"kind": "judge", "model": {}, "model_args": {"max_objects": 3}})  # a version-1 file
    with pytest.raises(CheckpointError, match="version 1"):
        load_judge_file(path)
    assert J.ensure_judge(synth_cfg) == "retrained" and len(calls) == 1
