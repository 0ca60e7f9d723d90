"""The CLIP reranker and the judge train, score and are handed out on the profile's device
(``cfg.resolved_device()``), checked here with the meta device standing in for a GPU."""
from __future__ import annotations

import torch

from lverse_core.config import Config, load_profile


def test_clip_reranker_trains_on_the_configured_device(tmp_path, monkeypatch):
    import lverse_core.sampling.clip_reranker as C

    monkeypatch.setattr(Config, "resolved_device", lambda self: "meta")
    monkeypatch.setattr(C, "fused_if_supported", lambda: {})  # the fused kernel has no meta implementation
    seen = {}

    def one_step(step_fn, **kwargs):  # the real loop would read the meta loss back for its log
        seen.update(step_fn(0))
        return 1
    monkeypatch.setattr(C, "run_steps", one_step)
    cfg = load_profile("ci", runs_dir=str(tmp_path), **{"clip.train_steps": 2, "clip.batch_size": 4})
    ds = [{"image": torch.zeros(3, 32, 32), "captions": [f"a {i} square."]} for i in range(4)]
    C.train_clip_reranker(cfg, ds)
    # a CPU model with meta inputs (or the reverse) cannot run; a CPU run gives a CPU loss
    assert seen["loss"].device.type == "meta"


def test_judge_is_trained_and_handed_out_on_the_configured_device(tmp_path, monkeypatch):
    import lverse_core.evaluation.judge as J
    from lverse_core.data import shapes, shapes_dataset

    cfg = load_profile("ci", runs_dir=str(tmp_path))
    judge = J.build_judge(cfg, shapes.SHAPES, shapes.COLOURS, shapes.SIZES)
    J.save_judge(cfg, judge)
    monkeypatch.setattr(Config, "resolved_device", lambda self: "meta")
    assert next(J.load_judge(cfg).parameters()).device.type == "meta"
    assert next(J.ensure_judge(cfg).parameters()).device.type == "meta"  # the saved one is current: reused
    devices = []
    n = 4
    images = torch.zeros(n, 3, cfg.data.image_size, cfg.data.image_size, dtype=torch.uint8)
    objs = [[{"shape": shapes.SHAPES[0], "colour": shapes.COLOURS[0], "size": shapes.SIZES[0], "x": 9.0,
              "y": 9.0}]] * n

    def fit(judge, images, objects, **kw):
        devices.append(kw["device"])
        return [1.0]
    monkeypatch.setattr(J, "fit_judge", fit)
    monkeypatch.setattr(J, "load_split", lambda cfg, split: (images, objs, ["a red circle."] * n))
    monkeypatch.setattr(J, "judge_accuracy", lambda *a, **k: {})
    monkeypatch.setattr(shapes_dataset, "ensure_dataset", lambda cfg: None)
    J.train_judge(cfg, log=False)
    assert devices == ["meta"]
