"""Table 3's evaluation streamed (paper §4.3 at 30,000 prompts): the same numbers as the whole-set computation that
notebook 05 did before, and memory that does not grow with the number of prompts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import synthetic_scenes as syn
from lverse_core.evaluation import verdicts as V
from lverse_core.evaluation.statistics import bootstrap_interval
from lverse_core.pipeline import eval_run as E
from lverse_core.pipeline import t2i_eval as S
from lverse_core.pipeline.eval_tables import ours_label

from test_recon_stream import _growth

RADII = [0, 2]


@pytest.fixture(scope="module")
def case(synth_data):
    """24 real scenes, 40 prompts (the first 16 scenes have two), generated images = the scene behind each prompt
    with noise (every fourth one another prompt's scene), reconstructions = the scenes with less noise; the stand-in
    decoder reads image ``codes[:, 0, 0]`` of that bank."""
    _, _, xt, ot = synth_data
    R, P = 24, 40
    real = xt[:R].float() / 127.5 - 1  # what generate.real_images reads: [-1, 1]
    image_of = list(range(R)) + list(range(16))  # prompt j describes scene image_of[j]
    captions = [syn.caption(ot[i]) for i in image_of]
    g = torch.Generator().manual_seed(0)
    drawn = [(image_of[j] if j % 4 else image_of[(j + 5) % P]) for j in range(P)]
    gen = (real[drawn] + 0.15 * torch.randn(P, 3, 32, 32, generator=g)).clamp(-1, 1)
    rec = (real + 0.05 * torch.randn(R, 3, 32, 32, generator=g)).clamp(-1, 1)
    bank = torch.cat([gen, rec])
    return {"real": real, "image_of": image_of, "captions": captions, "bank": bank,
            "decode": lambda c: bank[c[:, 0, 0]], "gen_codes": torch.arange(P).view(P, 1, 1),
            "rec_codes": (P + torch.arange(R)).view(R, 1, 1), "real_captions": [captions[i] for i in range(R)]}


def _sets(c) -> S.Table3Sets:
    real, image_of = c["real"], c["image_of"]
    return S.Table3Sets(generated=S.decoded(c["decode"], c["gen_codes"]), real=lambda idx: real[idx],
                        reconstructed=S.decoded(c["decode"], c["rec_codes"]), captions=c["captions"],
                        real_captions=c["real_captions"], n_real=len(real),
                        real_per_prompt=lambda idx: real[[image_of[i] for i in idx]])


def _verdicts(judge, images, prompts) -> dict:
    """eval_tables.judged_correct as it was: the judge on the whole set, then the shares."""
    from lverse_core.data.shapes import parse_caption
    from lverse_core.evaluation.judge import image_matches, to_unit_range

    ok = np.array([image_matches(s, p) for s, p in zip(judge.judge_image(to_unit_range(images)), prompts)])
    n_obj = np.array([len(parse_caption(p)) for p in prompts])
    out = {"judged_correct": float(ok.mean()), "n_images": len(ok)}
    out.update({f"judged_correct_{k}_objects": float(ok[n_obj == k].mean()) for k in sorted(set(n_obj.tolist()))})
    return {**out, "per_image": ok.tolist()}


def _whole_set_table3(cfg, c, judge, judge_path, resamples):
    """Notebook 05 as it was before the streaming (main at 0167314): every image set decoded or loaded whole, FID-k
    row by row against the whole real set, the judge on whole sets, the floor's loop over derangements."""
    from lverse_core.evaluation.fid import compute_fid_sweep, fid_label
    from lverse_core.evaluation.judge import image_matches, to_uint8, to_unit_range

    fake = E.decode_to_uint8(c["decode"], c["gen_codes"])
    real, real_per_prompt = to_uint8(c["real"]), to_uint8(c["real"][c["image_of"]])
    recon = E.decode_to_uint8(c["decode"], c["rec_codes"])
    captions, P = c["captions"], len(c["captions"])
    random_real = real_per_prompt[V.derangement(P, cfg.seed)]
    rows = {ours_label(cfg): (fake, captions), S.RECONSTRUCTED: (recon, c["real_captions"]),
            S.RANDOM_REAL: (random_real, captions)}
    scored, per_image = {}, {}
    for name, (imgs, caps) in rows.items():
        fids = compute_fid_sweep(real, imgs, cfg, RADII, cuda=False, judge_path=judge_path)
        v = _verdicts(judge, imgs, caps)
        per_image[name] = v.pop("per_image")
        scored[name] = {"fid_feature_space": fid_label(cfg), "fid": {f"FID-{r:g}": x for r, x in fids.items()}, **v}
    bounds = {"generated images": _verdicts(judge, fake, captions),
              "real images (judge ceiling)": _verdicts(judge, real_per_prompt, captions)}
    seen = judge.judge_image(to_unit_range(fake))
    hits = torch.zeros(P, dtype=torch.float64)
    for r in range(V.FLOOR_ROUNDS):
        d = V.derangement(P, cfg.seed + r)  # image d[j] is judged against prompt j
        for j in range(P):
            hits[d[j]] += float(image_matches(seen[int(d[j])], captions[j]))
    share = hits / V.FLOOR_ROUNDS
    bounds["images generated from shuffled captions (floor)"] = {
        "judged_correct": float(share.mean()), "n_images": P, "floor_rounds": V.FLOOR_ROUNDS,
        "n_pairs": V.FLOOR_ROUNDS * P, "matches": int(hits.sum()), "per_image": share.tolist()}
    for v in bounds.values():
        v["ci95"] = bootstrap_interval(v.pop("per_image"), resamples, cfg.seed).bounds
    bounds[S.RECONSTRUCTED + " (decoder ceiling)"] = {
        **{k: v for k, v in scored[S.RECONSTRUCTED].items() if k.startswith("judged_correct") or k == "n_images"},
        "ci95": bootstrap_interval(per_image[S.RECONSTRUCTED], resamples, cfg.seed).bounds}
    return scored, bounds


def test_streamed_table3_equals_the_whole_set_computation(trained_judge, synth_cfg, case):
    judge, path, _ = trained_judge
    got = S.evaluate_text_to_image(synth_cfg, _sets(case), judge=judge, radii=RADII, resamples=200, batch_size=16,
                                   cuda=False, judge_path=path)
    want_rows, want_bounds = _whole_set_table3(synth_cfg, case, judge, path, 200)
    assert list(got["rows"]) == list(want_rows) and list(got["judge"]) == list(want_bounds)
    for name, want in want_rows.items():
        row = got["rows"][name]
        assert row["fid_feature_space"] == want["fid_feature_space"]
        for k, v in want["fid"].items():  # the random row's FID is float noise around 0 on both paths
            assert row["fid"][k] == pytest.approx(v, rel=1e-6, abs=1e-6), (name, k)
        assert {k: v for k, v in row.items() if k != "fid"} == {k: v for k, v in want.items() if k != "fid"}, name
    assert got["judge"] == want_bounds
    ours = got["rows"][ours_label(synth_cfg)]
    # Not trivially equal: the rows differ from each other, and the judge tells right images from wrong ones.
    assert ours["fid"]["FID-0"] > 10 * max(got["rows"][S.RECONSTRUCTED]["fid"]["FID-0"], 1e-6)
    ceiling = got["judge"]["real images (judge ceiling)"]["judged_correct"]
    assert ceiling > ours["judged_correct"] > got["judge"]["images generated from shuffled captions (floor)"][
        "judged_correct"]


def test_streamed_table3_without_a_judge_is_fid_only(synth_cfg, trained_judge, case):
    _, path, _ = trained_judge
    sets = _sets(case)
    sets.real_per_prompt = None
    got = S.evaluate_text_to_image(synth_cfg, sets, radii=RADII, batch_size=7, cuda=False, judge_path=path)
    assert got["judge"] == {} and not any("judged_correct" in r for r in got["rows"].values())
    from lverse_core.evaluation.fid import compute_fid_sweep

    real = case["real"]
    fake = E.decode_to_uint8(case["decode"], case["gen_codes"])
    want = compute_fid_sweep(real, fake, synth_cfg, RADII, cuda=False, judge_path=path)
    ours = got["rows"][ours_label(synth_cfg)]
    assert [ours["fid"][f"FID-{r}"] for r in RADII] == pytest.approx(list(want.values()), rel=1e-6)
    # off embedded data the random row is the real images deranged: the same set, FID 0 up to float noise
    assert all(abs(v) < 1e-6 for v in got["rows"][S.RANDOM_REAL]["fid"].values())
    assert got["rows"][S.RANDOM_REAL]["n_images"] == len(real)


def test_streamed_table3_refuses_what_it_cannot_measure(synth_cfg, trained_judge, case):
    judge, path, _ = trained_judge
    sets = _sets(case)
    sets.real_per_prompt = None
    with pytest.raises(ValueError, match="real_per_prompt"):
        S.evaluate_text_to_image(synth_cfg, sets, judge=judge, cuda=False, judge_path=path)
    sets = _sets(case)
    sets.real_captions = sets.real_captions[:3]
    with pytest.raises(ValueError, match="real captions"):
        S.evaluate_text_to_image(synth_cfg, sets, cuda=False, judge_path=path)
    with pytest.raises(ValueError, match="batch_size"):
        S.evaluate_text_to_image(synth_cfg, _sets(case), batch_size=0, cuda=False, judge_path=path)


def test_floor_pairings_are_the_derangements_seen_from_the_images():
    p = V.floor_pairings(9, seed=4, rounds=3)
    for r in range(3):
        d = V.derangement(9, 4 + r)
        assert torch.equal(p[r][d], torch.arange(9))  # image d[j] meets prompt j
        assert (p[r] != torch.arange(9)).all()


def test_table3_memory_does_not_grow_with_the_number_of_prompts(tmp_path):
    """Table 3 (FID under blur radii 0 and 2, the judge with its 20-round floor) at N and 8N prompts, two per real
    image, 32 px (``_memory_scaling_worker``).

    Bound: a quarter of one copy of the extra 7N generated images as uint8, the smallest form the whole-set code held
    them in; it held four such copies (generated, the real image behind each prompt and its deranged copy, the real
    images and their reconstructions) and judged float copies of them. Measured once against it (main at 0167314,
    the notebook's cells with ``text_to_image_scores`` and the tensor ``judge_bounds``): +12.8 MiB against this
    bound's 0.17 MiB. Streamed, what grows is a few booleans and ids per prompt (the floor's pairings: 20 x 8 bytes):
    +0.05 MiB, under a third of the bound."""
    n, size = 32, 32
    out = _growth("table3", n, size, tmp_path)
    assert [r["n_images"] for r in out["results"]] == [32, n, 8 * n]
    assert all(np.isfinite(v) for r in out["results"] for v in r["fid"].values())
    growth, bound = out["growth_bytes"], 7 * n * 3 * size * size / 4
    extra = growth["8N"] - growth["N"]
    assert extra < bound, (f"Table 3: the heap in use grew by {growth['N'] / 2**20:.2f} MiB at N and "
                           f"{growth['8N'] / 2**20:.2f} MiB at 8N ({extra / 2**20:+.2f} MiB), against a bound of "
                           f"{bound / 2**20:.2f} MiB")
