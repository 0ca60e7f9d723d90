"""The attribute judge: it learns, decodes counts into object multi-sets, and round-trips through its checkpoint."""
from __future__ import annotations

import pytest
import torch

import synthetic_scenes as syn
from lverse_core.judge import (JudgeNet, judge_accuracy, load_judge, load_judge_file, same_objects, save_judge)
from lverse_core.train import CheckpointError, save_checkpoint


def test_judge_learns_well_above_chance(trained_judge, synth_data):
    judge, _, losses = trained_judge
    _, _, xt, ot = synth_data
    assert sum(losses[-20:]) / 20 < 0.5 * losses[0]
    acc = judge_accuracy(judge, xt, ot)
    # Chance of guessing a whole scene (1-2 of 24 object kinds) is below 1%.
    assert acc["exact"] > 0.3, acc
    assert acc["object_precision"] > 0.7, acc


def test_counts_decode_to_the_same_multiset():
    judge = JudgeNet(syn.SHAPES, syn.COLOURS, syn.SIZES, max_objects=3, image_size=32, width=8, feature_dim=16)
    scenes = [[{"shape": "circle", "colour": "red", "size": "small"}] * 2,
              [{"shape": "square", "colour": "blue", "size": "large"},
               {"shape": "triangle", "colour": "yellow", "size": "small"}], []]
    targets = judge.targets(scenes)  # (3, 24)
    assert targets.shape == (3, len(syn.SHAPES) * len(syn.COLOURS) * len(syn.SIZES))
    assert targets[0].sum() == 2 and targets[1].sum() == 2 and targets[2].sum() == 0
    # Logits that put all mass on the target counts must decode to the same scenes.
    logits = torch.nn.functional.one_hot(targets, 4).float() * 10
    judge.head.weight.data.zero_()
    judge.head.bias.data.zero_()
    decoded = []
    for row in logits:
        judge.head.bias.data = row.flatten()
        decoded += judge.judge_image(torch.zeros(1, 3, 32, 32))
    for got, want in zip(decoded, scenes):
        assert same_objects(got, want), (got, want)


def test_unknown_attribute_is_an_error():
    judge = JudgeNet(syn.SHAPES, syn.COLOURS, syn.SIZES, max_objects=2, image_size=32, width=8, feature_dim=16)
    with pytest.raises(ValueError, match="vocabulary"):
        judge.targets([[{"shape": "hexagon", "colour": "red", "size": "small"}]])


def test_checkpoint_round_trip(trained_judge, synth_cfg, synth_data):
    judge, path, _ = trained_judge
    x = synth_data[2][:8].float() / 127.5 - 1
    again = load_judge(synth_cfg)
    assert path.name == "judge.pt"
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
