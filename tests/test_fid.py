"""FID through torch-fidelity in the kit's judge feature space (and Inception only from a local file)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from lverse_core.config import MissingAssetError, load_profile
from lverse_core.evaluation.fid import (BlurredUInt8Images, FeatureStatistics, FidAccumulator, compute_fid,
                                       compute_fid_sweep, features_to_statistics, fid_label, gaussian_blur,
                                       kit_extractor_class, statistics_to_fid, to_uint8)
from lverse_core.evaluation.judge import load_judge_file
from lverse_core.training.loop import CheckpointError


def _noisy(x: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x.float() + std * 255 * torch.randn(x.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)


def _own_fid(judge, a: torch.Tensor, b: torch.Tensor, radius: float = 0) -> float:
    """Reference: our judge features + our Fréchet formula, without torch-fidelity."""
    feats = []
    for imgs in (a, b):
        ds = BlurredUInt8Images(imgs, radius)
        x = torch.stack([ds[i] for i in range(len(ds))]).float() / 127.5 - 1
        with torch.no_grad():
            feats.append(judge.features(x))
    return statistics_to_fid(*features_to_statistics(feats[0]), *features_to_statistics(feats[1]))


def test_statistics_to_fid_matches_torch_fidelity():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    f1 = torch.randn(200, 16, generator=g, dtype=torch.float64)
    f2 = 0.8 * torch.randn(150, 16, generator=g, dtype=torch.float64) + 0.3
    ours = statistics_to_fid(*features_to_statistics(f1), *features_to_statistics(f2))
    s1, s2 = fid_features_to_statistics(f1), fid_features_to_statistics(f2)
    theirs = fid_statistics_to_metric(s1, s2, verbose=False)["frechet_inception_distance"]
    assert ours == pytest.approx(theirs, rel=1e-9)
    # And the textbook form with a matrix square root.
    covmean = linalg.sqrtm(s1["sigma"] @ s2["sigma"]).real
    d = s1["mu"] - s2["mu"]
    textbook = d @ d + np.trace(s1["sigma"]) + np.trace(s2["sigma"]) - 2 * np.trace(covmean)
    assert ours == pytest.approx(textbook, rel=1e-6)
    assert ours > 0.5  # the two sets differ in mean and scale


def test_fid_self_zero_and_monotone_in_noise(trained_judge, synth_cfg, synth_data):
    _, path, _ = trained_judge
    x = synth_data[2]
    assert abs(compute_fid(x, x, synth_cfg, cuda=False, judge_path=path)) < 1e-3
    fids = [compute_fid(x, _noisy(x, std), synth_cfg, cuda=False, judge_path=path) for std in (0.05, 0.15, 0.4)]
    assert fids[0] > 1e-3
    assert fids[0] < fids[1] < fids[2], fids


def test_registered_kit_extractor_is_used_and_matches_our_reference(trained_judge, synth_cfg, synth_data):
    judge, path, _ = trained_judge
    x = synth_data[2]
    y = _noisy(x, 0.2, seed=1)
    cls = kit_extractor_class()
    before = cls.calls
    fid = compute_fid(x, y, synth_cfg, cuda=False, judge_path=path, batch_size=32)
    assert cls.calls - before == 2 * len(x) // 32  # every batch of both sides went through the judge
    assert fid == pytest.approx(_own_fid(load_judge_file(path), x, y), rel=1e-4, abs=1e-6)
    assert "not Inception" in fid_label(synth_cfg)


def test_float_and_uint8_inputs_agree(trained_judge, synth_cfg, synth_data):
    _, path, _ = trained_judge
    x = synth_data[2][:64]
    y = _noisy(x, 0.2)
    as_float = compute_fid(x.float() / 127.5 - 1, y.float() / 127.5 - 1, synth_cfg, cuda=False, judge_path=path)
    assert as_float == pytest.approx(compute_fid(x, y, synth_cfg, cuda=False, judge_path=path), rel=1e-5)
    # A dataset of (image, label) pairs and a list of tensors are accepted too.
    pairs = [(img.float() / 127.5 - 1, 0) for img in x]
    assert compute_fid(pairs, list(y), synth_cfg, cuda=False, judge_path=path) == pytest.approx(as_float, rel=1e-5)


def test_blur_is_pil_gaussian_and_applied_to_both_sides(trained_judge, synth_cfg, synth_data):
    judge, path, _ = trained_judge
    x = synth_data[2][:64]
    img = x[0]
    pil = Image.fromarray(img.permute(1, 2, 0).numpy()).filter(ImageFilter.GaussianBlur(radius=2))
    assert torch.equal(gaussian_blur(img, 2), torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1))
    assert torch.equal(gaussian_blur(img, 0), img)
    # Both sides blurred alike: a set against itself stays at ~0 for every radius ...
    assert abs(compute_fid(x, x, synth_cfg, blur_radius=2, cuda=False, judge_path=path)) < 1e-3
    # ... while blurring only one side is far from 0.
    blurred = torch.stack([gaussian_blur(i, 2) for i in x])
    assert compute_fid(x, blurred, synth_cfg, cuda=False, judge_path=path) > 1e-2
    # The blurred FID equals our reference with the blur applied to both sets.
    y = _noisy(x, 0.2)
    got = compute_fid(x, y, synth_cfg, blur_radius=1, cuda=False, judge_path=path)
    assert got == pytest.approx(_own_fid(load_judge_file(path), x, y, radius=1), rel=1e-4)
    assert got != pytest.approx(_own_fid(load_judge_file(path), x, y, radius=0), rel=1e-3)


def test_bad_inputs_are_clear_errors(trained_judge, synth_cfg, synth_data, tmp_path):
    _, path, _ = trained_judge
    x = synth_data[2][:8]
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        compute_fid(x.float(), x, synth_cfg, cuda=False, judge_path=path)  # 0..255 floats
    with pytest.raises(ValueError, match="shape"):
        compute_fid(x[:, :1], x, synth_cfg, cuda=False, judge_path=path)
    with pytest.raises(TypeError):
        to_uint8(torch.zeros(2, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(CheckpointError, match="train_judge"):
        compute_fid(x, x, synth_cfg, cuda=False, judge_path=tmp_path / "missing.pt")


def test_paper_profile_needs_the_local_inception_file(monkeypatch, tmp_path, synth_data):
    monkeypatch.delenv("LVERSE_INCEPTION_WEIGHTS", raising=False)
    cfg = load_profile("paper")
    assert cfg.eval.fid_extractor == "inception" and "Inception" in fid_label(cfg)
    x = synth_data[2][:4]
    with pytest.raises(MissingAssetError, match="inception_fid.*LVERSE_INCEPTION_WEIGHTS"):
        compute_fid(x, x, cfg, cuda=False)
    monkeypatch.setenv("LVERSE_INCEPTION_WEIGHTS", str(tmp_path / "nope.pth"))
    with pytest.raises(MissingAssetError, match="does not exist"):
        compute_fid(x, x, load_profile("paper"), cuda=False)


def _torch_fidelity_fid(real, fake, cfg, path, radius: float = 0, batch_size: int = 64) -> float:
    """Reference: torch-fidelity's own calculate_metrics, which holds every feature of both sets."""
    import torch_fidelity

    from lverse_core.evaluation.fid import extractor_settings

    metrics = torch_fidelity.calculate_metrics(
        input1=BlurredUInt8Images(real, radius), input2=BlurredUInt8Images(fake, radius), fid=True, cuda=False,
        batch_size=batch_size, cache=False, verbose=False, save_cpu_ram=True, samples_shuffle=False,
        datasets_download=False, **extractor_settings(cfg, path))
    return float(metrics["frechet_inception_distance"])


def test_streamed_fid_equals_torch_fidelity_calculate_metrics(trained_judge, synth_cfg, synth_data):
    _, path, _ = trained_judge
    x = synth_data[2]
    y = _noisy(x, 0.2, seed=3)
    # Batches that do not divide the sets (128 = 3 x 40 + 8) and sides of different sizes.
    streamed = compute_fid(x, y[:100], synth_cfg, cuda=False, judge_path=path, batch_size=40)
    assert streamed == pytest.approx(_torch_fidelity_fid(x, y[:100], synth_cfg, path), rel=1e-5, abs=1e-8)
    sweep = compute_fid_sweep(x, y, synth_cfg, [0, 2], cuda=False, judge_path=path, batch_size=64)
    for r in (0, 2):
        assert sweep[r] == pytest.approx(_torch_fidelity_fid(x, y, synth_cfg, path, radius=r), rel=1e-5, abs=1e-8)
    assert sweep[0] != pytest.approx(sweep[2], rel=1e-3)


def test_feature_statistics_stream_equals_all_at_once():
    g = torch.Generator().manual_seed(1)
    f = 50.0 + 0.01 * torch.randn(301, 8, generator=g, dtype=torch.float64)  # far from 0: no cancellation
    acc = FeatureStatistics()
    for i in range(0, len(f), 64):
        acc.update(f[i: i + 64].float())
    mu, sigma = acc.statistics()
    ref_mu, ref_sigma = features_to_statistics(f.float())
    assert acc.n == 301
    np.testing.assert_allclose(mu, ref_mu, rtol=1e-12)
    np.testing.assert_allclose(sigma, ref_sigma, rtol=1e-6, atol=1e-14)
    with pytest.raises(ValueError, match="at least 2 images"):
        FeatureStatistics().statistics()
    with pytest.raises(ValueError, match="dimensions"):
        acc.update(torch.zeros(2, 9))


def test_accumulator_errors_name_the_set_and_the_fix(trained_judge, synth_cfg, synth_data):
    _, path, _ = trained_judge
    acc = FidAccumulator(synth_cfg, [0], cuda=False, judge_path=path)
    acc.add("real", synth_data[2][:8])
    with pytest.raises(ValueError, match="'fake'"):
        acc.fid("real", "fake")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        acc.add("fake", synth_data[2][:8].float())
    with pytest.raises(ValueError, match="shape"):
        acc.add("fake", synth_data[2][0])
    with pytest.raises(ValueError, match="radii"):
        FidAccumulator(synth_cfg, [-1], cuda=False, judge_path=path)
