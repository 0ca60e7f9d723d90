"""The claims experiment's arms and measures: the working recipe in every arm, the main run's models reused by
provenance, claim 1 on the SL tokenizer, claim 3's warm-up, per-item measures and held-out NLL, KID under blur, a
subset of claims, progress lines and resuming arm by arm."""
import json
import math
import re

import pytest
import torch

from lverse_core import provenance
from lverse_core.config import ConfigError, derive, load_profile
from lverse_core.evaluation import claims_experiment as ce
from lverse_core.evaluation import claims_measures as cm


# -- the recipe ------------------------------------------------------------------------------------------------------

def test_every_arm_trains_and_samples_with_the_profiles_recipe():
    cfg = load_profile("smoke", **{"augvae_train.edge_weight": 0.5, "augvae_train.unquantized_steps": 120})
    s = ce.seed_config(cfg, 1)
    assert s.augvae_train.edge_weight == 0.5 and s.augvae_train.unquantized_steps == 120
    assert s.sampling == cfg.sampling  # the main run's candidates and likelihood rule, both directions
    b = ce.budgets(load_profile("smoke"))  # smoke's claims use the main run's own steps
    main = load_profile("smoke")
    assert (b["ml_steps"], b["sl_steps"], b["biart_steps"]) == (
        main.augvae_train.ml_steps, main.augvae_train.sl_steps, main.biart_train.steps)
    assert b["n_candidates"] == main.sampling.n_candidates
    single = cm._single_sample(s)  # claim 5's control: one sample in both directions, the same rule otherwise
    from lverse_core.sampling.candidates import caption_candidate_count
    assert single.sampling.n_candidates == 1 and caption_candidate_count(single.sampling) == 1
    assert single.sampling.image_likelihood_weight == cfg.sampling.image_likelihood_weight


def test_the_main_runs_seed_uses_the_main_data_set_and_other_seeds_their_own():
    cfg = load_profile("smoke")
    assert ce.seed_config(cfg, cfg.seed).data_root == cfg.data_root
    assert ce.seed_config(cfg, cfg.seed + 1).data_root != cfg.data_root
    assert ce.seed_config(cfg, cfg.seed).runs_root != cfg.runs_root  # never the main run's folder


def test_one_direction_controls_get_the_warmup_scaled_with_their_steps():
    from lverse_core.training.biart_train import lr_at

    s = ce.seed_config(load_profile("smoke"), 0)
    full = ce.biart_arm_config(s, "bidirectional")
    for arm in ("t2i_only", "i2t_only"):
        half = ce.biart_arm_config(s, arm)
        assert half.biart_train.steps == full.biart_train.steps // 2
        assert half.biart_train.warmup_steps / half.biart_train.steps == pytest.approx(
            full.biart_train.warmup_steps / full.biart_train.steps)
        for frac in (0.25, 0.5, 0.9):  # the same rate at the same fraction of training
            assert lr_at(round(frac * half.biart_train.steps), half) == pytest.approx(
                lr_at(round(frac * full.biart_train.steps), full), rel=2e-3)
        # inside the warm-up too, up to one step's rounding (the full warm-up here would give half the rate)
        assert lr_at(16, half) == pytest.approx(lr_at(32, full), rel=0.1)
    no_warm = ce.biart_arm_config(derive(s, **{"biart_train.warmup_steps": 0}), "t2i_only")
    assert no_warm.biart_train.warmup_steps == 0


def test_every_arm_of_the_paper_profile_is_configured_without_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing under the repository is read or written
    cfg = load_profile("paper")
    for seed in cfg.claims.seeds:
        s = ce.seed_config(cfg, seed)
        assert s.biart_train.steps == cfg.biart_train.steps
        for arm in ce.BIART_ARMS:
            a = ce.biart_arm_config(s, arm)
            assert a.biart_train.steps in (s.biart_train.steps, s.biart_train.steps // 2)
        for arm in ce.AUGVAE_ARMS:
            c, variant = ce._augvae_arm(s, arm)
            assert (c.augvae.codebook == "per_level") == arm.endswith("_per_level") and variant in ("ml", "sl",
                                                                                                      "baseline")
    assert list(tmp_path.iterdir()) == []


# -- rows and claims ----------------------------------------------------------------------------------------------

def test_claim_1a_compares_the_sl_tokenizers_and_no_row_compares_code_sharing():
    rows = [r for r in ce.CLAIM_ROWS if r[0].startswith("1a ")]
    assert rows and {(r[2][0], r[3][0]) for r in rows} == {("sl", "sl_per_level")}
    assert {r[2][1] for r in rows} == {"psnr_db", "ssim", "fid", "judged_right"}
    assert not [r for r in ce.CLAIM_ROWS if "codes_shared_by_levels" in (r[2][1], r[3][1])]
    arms = {*ce.AUGVAE_ARMS, *ce.BIART_ARMS}
    assert all(r[2][0] in arms and r[3][0] in arms for r in ce.CLAIM_ROWS)
    assert {ce.claim_number(r[0]) for r in ce.CLAIM_ROWS} == set(ce.CLAIMS)
    six = [r for r in ce.CLAIM_ROWS if ce.claim_number(r[0]) == 6]
    assert [(r[2], r[3]) for r in six] == [(("bidirectional", "kid_fall_generated"),
                                            ("bidirectional", "kid_fall_ceiling"))]
    three = [r for r in ce.CLAIM_ROWS if ce.claim_number(r[0]) == 3]
    assert {r[2][1] for r in three} >= {"nll_i2t", "nll_t2i"}


def test_a_subset_of_claims_runs_only_their_arms_and_is_validated():
    cfg = load_profile("ci", **{"claims.only": [1, 3]})
    assert ce.claims_selected(cfg) == (1, 3)
    assert ce.arms_selected(cfg) == [*ce.AUGVAE_ARMS, "bidirectional", "t2i_only", "i2t_only"]
    assert {ce.claim_number(r[0]) for r in ce.claim_rows(cfg)} == {1, 3}
    assert ce.arms_selected(load_profile("ci", **{"claims.only": [5]})) == ["bidirectional"]
    assert ce.arms_selected(load_profile("ci")) == [*ce.AUGVAE_ARMS, *ce.BIART_ARMS]
    for bad in ([7], [0], [2, 2]):
        with pytest.raises(ConfigError, match="claims.only"):
            load_profile("ci", **{"claims.only": bad})
    assert ce.parse_claims("1 3") == ce.parse_claims("1,3") == ce.parse_claims([1, 3]) == [1, 3]
    assert ce.parse_claims("") == [] and ce.parse_claims(4) == [4]
    with pytest.raises(ConfigError, match="not a claim number"):
        ce.parse_claims("1 three")


# -- measures -----------------------------------------------------------------------------------------------------

def test_heldout_nll_per_pair_averages_to_the_heldout_table():
    from lverse_core.evaluation.likelihood import heldout_nll, heldout_nll_per_pair
    from lverse_core.models.biart import BiART, BiARTArgs
    from lverse_core.training.biart_train import synthetic_pairs

    torch.manual_seed(0)
    model = BiART(BiARTArgs(n_layer=1, n_head=2, n_embd=16, text_len=6, image_tokens=4, text_vocab=20,
                            image_vocab=8, pad_id=0, dropout=0.0))
    pairs = synthetic_pairs(5, 2, 6, 20, 4, 8, seed=0, pad_id=0)
    per = heldout_nll_per_pair(model, pairs, "cpu", batch_size=3)
    table = heldout_nll(model, pairs, "cpu").set_index(["direction", "part"])["nll"]
    assert per["t2i"].shape == per["i2t"].shape == (len(pairs.text),)
    assert float(per["t2i"].mean()) == pytest.approx(table[("text->image", "[GEN]")], rel=1e-5)
    n_tok = (pairs.text != 0).sum(1).double()
    assert float((per["i2t"] * n_tok).sum() / n_tok.sum()) == pytest.approx(table[("image->text", "[GEN]")],
                                                                          rel=1e-5)


def test_per_item_text_measures_follow_the_test_items_order():
    test = {"ids": [7, 3, 5], "objects": [[], [], []]}
    refs = {7: ["a red circle"], 3: ["a blue square"], 5: ["a green circle"]}
    preds = {3: "a blue square", 5: "something else entirely", 7: "a red circle"}
    ordered = {i: preds[i] for i in test["ids"]}
    out = cm._bleu_cider(ordered, refs)
    assert len(out["bleu4_items"]) == len(out["cider_items"]) == 3
    assert out["cider_items"][2] < out["cider_items"][0]  # item 5 (third) is the wrong one
    assert out["cider"] == pytest.approx(sum(out["cider_items"]) / 3)
    m = {}
    cm._items(m, "x", [1.0, 0.0, 1.0])
    assert m == {"x": pytest.approx(2 / 3), "x_items": [1.0, 0.0, 1.0]}


def test_kid_and_its_relative_fall_never_raise_on_a_nonpositive_value():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(60, 8, generator=g), torch.randn(60, 8, generator=g) + 2.0
    assert cm.kid(a, b) > cm.kid(a, a[torch.randperm(60, generator=g)]) and math.isfinite(cm.kid(a, b))
    assert cm.relative_fall({0.0: 2.0, 4.0: 0.5}) == (pytest.approx(0.75), "")
    for bad in ({0.0: 0.0, 4.0: 0.1}, {0.0: -0.01, 4.0: 0.1}, {0.0: float("nan"), 4.0: 0.1}):
        value, why = cm.relative_fall(bad)
        assert math.isnan(value) and why
    with pytest.raises(ValueError, match="at least 2"):
        cm.kid(a[:1], b)


def _blurred(generated, reconstructions):
    return {**{f"kid_generated_blur{r:g}": v for r, v in generated.items()},
            **{f"kid_reconstructions_blur{r:g}": v for r, v in reconstructions.items()}}


def test_claim_6s_falls_are_defined_when_the_reconstructions_kid_is_at_zero():
    # the reconstructions cannot be told from the real images (KID at or below zero at every radius), as measured
    # on every seed at 100 embedded images: their fall relative to themselves is undefined, on the generated
    # images' scale it is a number
    m = _blurred({0: 0.004, 2: 0.002, 8: 0.0005}, {0: -0.001, 2: -0.0009, 8: -0.0008})
    out = cm.blur_falls(m)
    assert out == {"kid_fall_generated": pytest.approx(0.875), "kid_fall_ceiling": pytest.approx(-0.05)}
    assert math.isnan(cm.relative_fall({0.0: -0.001, 8.0: -0.0008})[0])  # the earlier control: undefined
    # generated images that cannot be told from the real ones either: no fall to measure, said for both
    out = cm.blur_falls(_blurred({0: -0.0001, 8: 0.0}, {0: 0.0, 8: 0.0}))
    assert math.isnan(out["kid_fall_generated"]) and math.isnan(out["kid_fall_ceiling"])
    assert "not positive" in out["kid_fall_ceiling_why"]
    assert cm.blur_falls(_blurred({0: 0.1}, {0: 0.1})) == {} and cm.blur_falls({}) == {}  # one radius: no fall


def test_measures_saved_before_the_ceiling_fall_get_it_from_their_kids():
    from lverse_core.evaluation.scorecard import with_derived

    old = {**_blurred({0: 0.004, 8: 0.001}, {0: -0.002, 8: -0.001}), "kid_fall_generated": 0.75,
           "kid_fall_reconstructions": math.nan}
    got = with_derived({0: {"bidirectional": old}})[0]["bidirectional"]
    assert got["kid_fall_ceiling"] == pytest.approx(-0.25) and got["kid_fall_generated"] == 0.75
    new = dict(old, kid_fall_ceiling=0.1)
    assert with_derived({0: {"bidirectional": new}})[0]["bidirectional"]["kid_fall_ceiling"] == 0.1  # kept


# -- reuse ----------------------------------------------------------------------------------------------------------

def _ci(tmp_path, **over):
    return load_profile("ci", **{"runs_dir": str(tmp_path / "runs"), "reports_dir": str(tmp_path / "reports"),
                                 **over})


def _inputs_of(cfg_s):
    """Stand-ins for every file the measures of a seed name as inputs."""
    from lverse_core.data.tokenizer import tokenizer_path
    from lverse_core.evaluation.judge import judge_path
    from lverse_core.sampling.clip_reranker import reranker_path
    from lverse_core.training.augvae_train import checkpoint_path
    from lverse_core.training.pretokenize import codes_dir

    files = [judge_path(cfg_s), tokenizer_path(cfg_s), reranker_path(cfg_s), codes_dir(cfg_s) / "train_codes.npy",
             codes_dir(cfg_s) / "test_codes.npy"]
    for arm in ce.AUGVAE_ARMS:
        c, v = ce._augvae_arm(cfg_s, arm)
        files.append(checkpoint_path(c, v))
    for p in files:
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists():
            p.write_bytes(p.name.encode())


def test_an_arm_is_reused_for_the_same_settings_and_inputs_and_remade_when_one_changes(tmp_path, monkeypatch):
    import lverse_core

    cfg_s = ce.seed_config(_ci(tmp_path), 0)
    _inputs_of(cfg_s)
    (cfg_s.runs_root / "biart_no_segment.pt").write_bytes(b"weights")
    calls, lines = [], []

    def compute():
        calls.append(1)
        return {"captions_right": 0.5, "captions_right_items": [1.0, 0.0], "nll_i2t": float("nan"),
                "nll_i2t_why": "x"}

    out, fresh = cm.measure_once(cfg_s, "no_segment", compute, lines.append)
    assert fresh and math.isnan(out["nll_i2t"]) and out["captions_right_items"] == [1.0, 0.0]
    monkeypatch.setattr(lverse_core, "__version__", "99.0")  # a commit that changes no setting
    assert cm.measure_once(cfg_s, "no_segment", compute, lines.append)[1] is False and len(calls) == 1
    for key, value in (("biart_train.precision", "bf16" if cfg_s.biart_train.precision != "bf16" else "fp32"),
                       ("claims.biart_steps", 6)):
        changed = ce.seed_config(_ci(tmp_path, **{key: value}), 0)
        assert cm.measure_once(changed, "no_segment", compute, lines.append)[1] is True
        assert any("biart_train." + key.split(".")[1].replace("biart_", "") in ln for ln in lines), lines
    (cfg_s.runs_root / "biart_no_segment.pt").write_bytes(b"retrained")  # an input's content changed
    lines.clear()
    assert cm.measure_once(ce.seed_config(_ci(tmp_path, **{"claims.biart_steps": 6}), 0), "no_segment", compute,
                      lines.append)[1] is True
    assert any("BiART no_segment" in ln for ln in lines)


def test_claim_6s_image_count_remeasures_only_the_arm_whose_kids_it_shapes(tmp_path):
    cfg_s = ce.seed_config(_ci(tmp_path), 0)
    _inputs_of(cfg_s)
    for arm in ("bidirectional", "no_segment"):
        (cfg_s.runs_root / f"biart_{arm}.pt").write_bytes(arm.encode())
        assert cm.measure_once(cfg_s, arm, lambda: {"nll_i2t": 1.0}, print)[1] is True
    more = ce.seed_config(_ci(tmp_path, **{"claims.blur_images": cfg_s.claims.blur_images + 8}), 0)
    lines = []
    assert cm.measure_once(more, "no_segment", lambda: {"nll_i2t": 2.0}, lines.append) == ({"nll_i2t": 1.0}, False)
    assert cm.measure_once(more, "bidirectional", lambda: {"nll_i2t": 2.0}, lines.append) == ({"nll_i2t": 2.0}, True)
    assert any("claims budget.blur_images 12 -> 20" in ln for ln in lines), lines
    with pytest.raises(ConfigError, match="blur_images: 1; KID compares at least 2"):
        _ci(tmp_path, **{"claims.blur_images": 1})


def test_claim_6s_sets_are_the_first_blur_images_items_and_only_the_further_ones_are_drawn(tmp_path, monkeypatch):
    split = {"images": torch.arange(10, 16, dtype=torch.uint8).view(6, 1, 1, 1), "ids": list(range(10, 16)),
             "objects": [["circle"]] * 6, "captions": [f"caption {i}" for i in range(10, 16)]}

    def test_set(c, n=None):
        return {k: v[:c.claims.eval_images if n is None else n] for k, v in split.items()}

    drawn = []

    def draw(cfg_r, model, parts, scorer, test):  # a stand-in image per item: its id
        drawn.append((list(test["ids"]), list(test["captions"]), scorer))
        return torch.tensor(test["ids"], dtype=torch.uint8).view(-1, 1, 1, 1)

    monkeypatch.setattr(cm, "test_set", test_set)
    monkeypatch.setattr(cm, "_drawn_images", draw)

    def sets(**over):
        cfg_s = ce.seed_config(_ci(tmp_path, **{"claims.eval_images": 3, **over}), 0)
        test = test_set(cfg_s)
        generated = torch.tensor([10, 11, 12], dtype=torch.uint8).view(3, 1, 1, 1)  # the other measures' images
        drawn.clear()
        wide, images = cm._blur_sets(cfg_s, None, {}, "the reranker", test, generated)
        assert torch.equal(wide["images"], images)  # item i's image next to the real image i
        return wide["ids"], drawn[:]

    assert sets(**{"claims.blur_images": 5}) == (
        [10, 11, 12, 13, 14], [([13, 14], ["caption 13", "caption 14"], "the reranker")])
    assert sets(**{"claims.blur_images": 2}) == ([10, 11], [])  # fewer: the first of those already drawn
    assert sets(**{"claims.blur_images": 0}) == ([10, 11, 12], [])  # 0 = eval_images
    ids, more = sets(**{"claims.blur_images": 50})  # more than the split holds: all of it
    assert ids == list(range(10, 16)) and more[0][0] == [13, 14, 15]


def _main_files(cfg):
    """Stand-ins for the main run's models, each with a record made from ``cfg``'s settings and inputs."""
    view = ce._main_artefacts(cfg)
    for _, path, _, extra in view:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"main {path.name}".encode())
        for e in extra:
            e.parent.mkdir(parents=True, exist_ok=True)
            e.write_text("step,elapsed_s\n1,2.5\n")
    for _, path, made, _ in ce._main_artefacts(cfg):  # ids of the files as they are now
        provenance.record(path, made)


def test_the_main_runs_models_are_the_main_seeds_method_arms_when_made_alike(tmp_path):
    cfg = _ci(tmp_path, **{"claims.ml_steps": 0, "claims.sl_steps": 0, "claims.biart_steps": 0})
    main_view = ce.seed_config(cfg, cfg.seed)
    from lverse_core.config import derive as _derive
    main_view = _derive(main_view, runs_dir=cfg.runs_dir, reports_dir=cfg.reports_dir)
    _main_files(main_view)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in cfg.runs_root.rglob("*") if p.is_file()}
    cfg_s, lines = ce.seed_config(cfg, cfg.seed), []
    got = ce.adopt_main_run(cfg, cfg_s, lines.append)
    assert got == ["AugVAE-ML", "AugVAE-SL", "codes (train)", "codes (test)", "tokenizer", "CLIP reranker", "judge",
                   "BiART"]
    assert (cfg_s.runs_root / "biart_bidirectional.pt").read_bytes() == b"main biart.pt"
    for _, path, made, _ in ce._main_artefacts(cfg_s):  # every copy is current for the claims seed itself
        if path.name != "biart.pt":
            assert provenance.decide(path, made).ok, path
    from lverse_core.training.biart_train import biart_made_from
    assert provenance.decide(cfg_s.runs_root / "biart_bidirectional.pt",
                             biart_made_from(ce.biart_arm_config(cfg_s, "bidirectional"))).ok
    assert cm._train_seconds(cfg_s.runs_root / "logs" / "biart_bidirectional.csv") == 2.5
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before}
    assert after == before  # the main run's files only read
    assert ce.adopt_main_run(cfg, ce.seed_config(cfg, cfg.seed + 1), lines.append) == []  # other seeds train
    # one setting differs from the main run's: that model (and what depends on it) is trained by the claims
    other = _ci(tmp_path, **{"claims.ml_steps": 0, "claims.sl_steps": 0, "claims.biart_steps": 7})
    lines.clear()
    got = ce.adopt_main_run(other, ce.seed_config(other, other.seed), lines.append, instruments=False)
    assert "BiART" not in got and "judge" not in got and "AugVAE-SL" in got
    assert any("BiART" in ln and "biart_train.steps" in ln for ln in lines), lines
    # a model made from one the claims train anew is not copied either (theirs is made from their own)
    same = {"claims.ml_steps": 0, "claims.sl_steps": 0, "claims.biart_steps": 0}
    main = _ci(tmp_path / "third", **same)
    _main_files(_derive(ce.seed_config(main, main.seed), runs_dir=main.runs_dir, reports_dir=main.reports_dir))
    third = _ci(tmp_path / "third", **{**same, "claims.ml_steps": 3})
    got = ce.adopt_main_run(third, ce.seed_config(third, third.seed), lines.append)
    assert got == ["tokenizer", "CLIP reranker", "judge"]


def test_a_stopped_run_resumes_with_the_next_arm_and_prints_one_line_per_arm(tmp_path, monkeypatch):
    import lverse_core.evaluation.judge as judge_mod
    import lverse_core.training.augvae_train as augvae_train

    cfg = _ci(tmp_path, **{"claims.seeds": [0, 1], "claims.only": [1, 3]})
    monkeypatch.setattr(ce, "adopt_main_run", lambda cfg, cfg_s, log, instruments=True: [])
    monkeypatch.setattr(ce, "prepare_seed", lambda cfg_s, log, arms: _inputs_of(cfg_s))
    monkeypatch.setattr(judge_mod, "ensure_judge", lambda cfg_s: "judge")
    monkeypatch.setattr(cm, "test_set", lambda cfg_s: {"ids": [1, 2]})
    monkeypatch.setattr(augvae_train, "load_augvae", lambda c, v: torch.nn.Linear(2, 2))
    computed, stop = [], {"after": 4}

    def measured(arm, seed):
        computed.append((seed, arm))
        if len(computed) > stop["after"]:
            raise KeyboardInterrupt  # killed while measuring this arm
        return {"judged_right": 0.5, "judged_right_items": [1.0, 0.0], "psnr_db": 20.0, "captions_right": 0.5,
                "images_right": 0.25}

    monkeypatch.setattr(cm, "reconstruction_measures",
                        lambda cfg_s, model, test, judge: measured(model.__class__.__name__, cfg_s.seed))

    def train_arm(cfg_s, arm):
        (cfg_s.runs_root / f"biart_{arm}.pt").write_bytes(arm.encode())
        return torch.nn.Linear(2, 2), {}

    monkeypatch.setattr(cm, "_train_arm", train_arm)
    monkeypatch.setattr(cm, "_nll_measures", lambda cfg_s, model, parts, test, arm: measured(arm, cfg_s.seed))
    monkeypatch.setattr(cm, "_caption_measures", lambda *a: {})
    monkeypatch.setattr(cm, "_image_measures", lambda *a, **k: {})
    monkeypatch.setattr(ce, "share_instruments", lambda first, cfg_s: None)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        ce.run_claims(cfg, log=lines.append)
    assert len(computed) == 5 and len([ln for ln in lines if " · " in ln]) == 4
    stop["after"] = 10 ** 6
    computed.clear()
    lines.clear()
    out = ce.run_claims(cfg, log=lines.append)
    n_arms = len(ce.arms_selected(cfg))
    assert len(computed) == 2 * n_arms - 4  # the four finished arms were not measured again
    assert list(out[0]) == ce.arms_selected(cfg) and out[1]["t2i_only"]["steps"] == 2
    arm_lines = [ln for ln in lines if " · " in ln]
    assert len(arm_lines) == 2 * n_arms and arm_lines[0].startswith("seed 0 · AugVAE ml · reused")
    assert any(ln.startswith("seed 1 · BiART t2i_only · measured: 2 steps") and "images 0.25" in ln
               for ln in arm_lines)
    # a fresh line says what its time covers: an AugVAE arm was trained before its line (prepare_seed), a BiART
    # arm's line follows its training and measures
    fresh = {ln.split(" · ")[1].split()[0]: ln for ln in arm_lines if "· measured:" in ln}
    assert re.search(r"\(its measures \d+ s\)", fresh["AugVAE"]), fresh["AugVAE"]
    assert re.search(r"\(training and measures this run \d+ s\)", fresh["BiART"]), fresh["BiART"]
    saved = json.loads((ce.seed_config(cfg, 0).runs_root / "measures_ml.json").read_text())["measures"]
    assert saved["parameters"] == 6 and saved["judged_right_items"] == [1.0, 0.0]


def test_make_claims_passes_a_subset_of_claims_to_the_notebook():
    import shlex
    import subprocess

    from lverse_core.config import REPO_ROOT
    from lverse_core.pipeline.cli import coerce
    from tests._limits import HANG_GUARD_S

    def dry(*args):
        out = subprocess.run(["make", "-n", "claims", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=HANG_GUARD_S, check=True).stdout.splitlines()
        return shlex.split(next(line for line in out if "--only 07" in line))

    words = dry('CLAIMS=1 3')
    assert words[words.index("-p") + 1: words.index("-p") + 3] == ["CLAIMS", "1 3"]
    assert "PRIMARIES_ONLY" not in words
    words = dry("CLAIMS=2", "PRIMARIES_ONLY=1")
    assert words[-3:] == ["-p", "PRIMARIES_ONLY", "true"] and coerce("true") is True
    assert ce.parse_claims(coerce("1 3")) == [1, 3] and ce.parse_claims(coerce("6")) == [6]
    assert "-p" not in dry()


def test_the_blur_figure_draws_both_sets_per_seed_and_skips_runs_without_the_arm():
    m = {"kid_generated_blur0": 0.2, "kid_generated_blur4": 0.05, "kid_reconstructions_blur0": 0.1,
         "kid_reconstructions_blur4": float("nan")}
    fig = cm.blur_kid_figure({0: {"bidirectional": m}, 1: {"bidirectional": m}}, [4, 0])
    assert len(fig.axes[0].lines) == 4 and list(fig.axes[0].lines[0].get_xdata()) == [0.0, 4.0]
    assert cm.blur_kid_figure({0: {"ml": {}}}, [0, 4]) is None


def test_notebook_07_declares_the_claims_parameter():
    import papermill

    from lverse_core.pipeline.execute import NOTEBOOK_DIR

    params = papermill.inspect_notebook(str(NOTEBOOK_DIR / "07_claims.ipynb"))
    assert "CLAIMS" in params and "PRIMARIES_ONLY" in params and "SEEDS" in params


@pytest.mark.parametrize("claims, full, primaries", [
    ([1], ["ml", "ml_per_level", "sl", "sl_per_level", "baseline"], ["sl", "sl_per_level"]),
    ([2], ["bidirectional", "no_segment", "shared_positions", "shared_positions_no_segment"],
     ["bidirectional", "no_segment"]),
    ([3], ["bidirectional", "t2i_only", "i2t_only"], ["bidirectional", "t2i_only", "i2t_only"]),
    ([2, 4, 5, 6], ["bidirectional", "no_segment", "shared_positions", "shared_positions_no_segment"],
     ["bidirectional", "no_segment"]),
])
def test_primaries_only_trains_the_arms_the_primary_measures_compare(claims, full, primaries):
    cfg = derive(load_profile("smoke"), **{"claims.only": claims})
    assert ce.arms_selected(cfg) == full and cfg.claims.primaries_only is False
    assert ce.arms_selected(derive(cfg, **{"claims.primaries_only": True})) == primaries


def test_every_primary_arm_is_an_arm_or_a_group_of_arms():
    from lverse_core.evaluation.claims_arms import PRIMARY_ARM_GROUPS, primary_arms
    from lverse_core.evaluation.scorecard import ONE_DIRECTION

    assert ONE_DIRECTION in PRIMARY_ARM_GROUPS
    cfg = load_profile("smoke")
    for n in range(1, 7):
        assert primary_arms(cfg, n) <= set(ce.AUGVAE_ARMS + ce.BIART_ARMS), n


def test_a_primaries_only_scorecard_says_which_secondary_rows_were_not_measured():
    from lverse_core.evaluation.scorecard import PRIMARY, scorecard

    cfg = derive(load_profile("smoke"), **{"claims.only": [2], "claims.primaries_only": True})
    gen = torch.Generator().manual_seed(0)
    measures = {s: {arm: {"nll_i2t": 1.0 + d + 0.01 * float(torch.rand(1, generator=gen)),
                          "nll_t2i": 2.0 + d + 0.01 * float(torch.rand(1, generator=gen))}
                    for arm, d in (("bidirectional", 0.0), ("no_segment", 0.2))} for s in (0, 1, 2)}
    card = scorecard(measures, cfg.claims, ce.claim_rows(cfg))
    primary = card[card["role"] == PRIMARY]
    assert len(primary) == 1 and primary["verdict"].iloc[0].startswith("supported")
    assert card[card["method arm"].str.startswith("shared_positions")]["verdict"].str.startswith("not measured").all()


# -- the plan printed before a run -----------------------------------------------------------------------------------

def _plan(cfg):
    return [(p.seed, p.name, p.steps, p.state) for p in ce.training_plan(cfg)]


def test_the_plan_lists_every_training_of_the_selected_claims_and_what_is_reused(tmp_path):
    from lverse_core.config import derive as _derive
    from lverse_core.training.augvae_train import augvae_made_from, checkpoint_path

    same = {"claims.ml_steps": 0, "claims.sl_steps": 0, "claims.biart_steps": 0, "claims.only": [1, 2],
            "claims.primaries_only": True}
    cfg = _ci(tmp_path, **same)
    ml, sl, bi = cfg.augvae_train.ml_steps, cfg.augvae_train.sl_steps, cfg.biart_train.steps
    later = [(1, "AugVAE-ML", ml, ce.TO_TRAIN), (1, "AugVAE-SL", sl, ce.TO_TRAIN),
             (1, "AugVAE-ML per level", ml, ce.TO_TRAIN), (1, "AugVAE-SL per level", sl, ce.TO_TRAIN),
             (1, "BiART bidirectional", bi, ce.TO_TRAIN), (1, "BiART no_segment", bi, ce.TO_TRAIN)]
    first = [(0, *row[1:]) for row in later]
    instruments = [(0, "CLIP reranker", cfg.clip.train_steps, ce.TO_TRAIN),
                   (0, "judge", cfg.eval.judge_steps, ce.TO_TRAIN)]
    assert _plan(cfg) == first[:4] + instruments + first[4:] + later  # nothing made yet; instruments once

    # the main run's models made from these settings are the main seed's (what adopt_main_run copies)
    _main_files(_derive(ce.seed_config(cfg, cfg.seed), runs_dir=cfg.runs_dir, reports_dir=cfg.reports_dir))
    main = {"AugVAE-ML", "AugVAE-SL", "BiART bidirectional", "CLIP reranker", "judge"}
    assert [r[3] for r in _plan(cfg) if r[0] == 0] == [ce.MAIN_RUN if r[1] in main else ce.TO_TRAIN
                                                       for r in first[:4] + instruments + first[4:]]
    # a finished per-level ML is finished; an SL made from an ML still to train is to train, whatever its record
    s1 = ce.seed_config(cfg, 1)
    per = ce.per_level_config(s1)
    for c, v in ((per, "ml"), (s1, "sl")):
        checkpoint_path(c, v).parent.mkdir(parents=True, exist_ok=True)
        checkpoint_path(c, v).write_bytes(b"weights")
        provenance.record(checkpoint_path(c, v), augvae_made_from(c, v))
    got = {r[1]: r[3] for r in _plan(cfg) if r[0] == 1}
    assert got["AugVAE-ML per level"] == ce.FINISHED and got["AugVAE-SL per level"] == ce.TO_TRAIN
    assert got["AugVAE-ML"] == got["AugVAE-SL"] == ce.TO_TRAIN
    # claims.only and primaries_only choose the arms: claim 3 alone trains the one-direction pair, no per-level ML
    three = {r[1] for r in _plan(_ci(tmp_path / "3", **{**same, "claims.only": [3]}))}
    assert {"BiART t2i_only", "BiART i2t_only"} <= three and not any("per level" in n for n in three)


def test_a_training_stopped_before_its_last_step_is_planned_to_resume_with_its_remaining_steps(tmp_path):
    from lverse_core.pipeline.estimate import ClaimsEstimate
    from lverse_core.training.augvae_train import augvae_made_from, checkpoint_path

    cfg = _ci(tmp_path, **{"claims.ml_steps": 0, "claims.sl_steps": 0, "claims.biart_steps": 0,
                           "claims.seeds": [1], "claims.only": [6]})
    s1 = ce.seed_config(cfg, 1)
    ml, sl = s1.augvae_train.ml_steps, s1.augvae_train.sl_steps
    for variant, step in (("ml", ml), ("sl", 4)):  # a finished ML; an SL saved at step 4 (a checkpoint on the way)
        path = checkpoint_path(s1, variant)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"kind": f"augvae-{variant}", "model": {}, "step": step, "finished": step >= 10}, path)
        provenance.record(path, augvae_made_from(s1, variant))
    plan = ce.training_plan(cfg)
    got = {p.name: (p.steps, p.state, p.done) for p in plan}
    assert got["AugVAE-ML"] == (ml, ce.FINISHED, 0)
    assert got["AugVAE-SL"] == (sl - 4, ce.TO_TRAIN, 4)  # the steps still to run, not reused as finished
    assert got["BiART bidirectional"][1] == ce.TO_TRAIN  # made from an SL still to train
    lines = ClaimsEstimate(plan, {"AugVAE-SL": 0.5, "BiART": 0.25}).lines()
    # the SL, the BiART made from it, and the first seed's reranker and judge
    assert lines[0] == "claims plan: 4 trainings to run; reused: 1 finished"
    assert f"AugVAE-SL {sl - 4:,} (resumes at step 4)" in lines[1]
    assert ClaimsEstimate(plan, {"AugVAE-SL": 0.5}).training_s == (sl - 4) * 0.5
    # a file that cannot be read as a checkpoint: left to the training, which says what is wrong with it
    checkpoint_path(s1, "sl").write_bytes(b"not a checkpoint")
    provenance.record(checkpoint_path(s1, "sl"), augvae_made_from(s1, "sl"))
    assert {p.name: p.state for p in ce.training_plan(cfg)}["AugVAE-SL"] == ce.FINISHED


def test_an_arm_with_current_measures_is_planned_as_measured(tmp_path):
    cfg = _ci(tmp_path, **{"claims.seeds": [0], "claims.only": [2], "claims.primaries_only": True})
    cfg_s = ce.seed_config(cfg, 0)
    _inputs_of(cfg_s)
    (cfg_s.runs_root / "biart_no_segment.pt").write_bytes(b"weights")
    assert dict((r[1], r[3]) for r in _plan(cfg))["BiART no_segment"] == ce.TO_TRAIN
    assert cm.measure_once(cfg_s, "no_segment", lambda: {"nll_i2t": 1.0}, print)[1] is True
    from lverse_core.training.augvae_train import augvae_made_from, checkpoint_path
    for v in ("ml", "sl"):  # the SL it was measured with is current: the measures stand
        provenance.record(checkpoint_path(cfg_s, v), augvae_made_from(cfg_s, v))
    assert dict((r[1], r[3]) for r in _plan(cfg))["BiART no_segment"] == ce.MEASURED


def test_the_claims_estimate_times_what_is_to_train(tmp_path, monkeypatch):
    from lverse_core.pipeline import estimate

    cfg = _ci(tmp_path, **{"claims.seeds": [0, 1], "claims.only": [2], "claims.primaries_only": True})
    est = estimate.claims_estimate(cfg)
    assert est.step_s == {}  # ci: too few steps to time
    lines = est.lines()
    assert lines[0].startswith(f"claims plan: {len(est.to_train)} trainings to run") and len(est.to_train) == 10
    assert lines[1].startswith("  seed 0 (steps): AugVAE-ML ") and lines[2].startswith("  seed 1 (steps): ")
    monkeypatch.setattr(estimate, "MIN_STEPS", 1)
    monkeypatch.setattr(estimate, "_timed", lambda step, steps, device="cpu": 0.25)
    est = estimate.claims_estimate(cfg)
    assert est.step_s == {"AugVAE-ML": 0.25, "AugVAE-SL": 0.25, "BiART": 0.25}
    timed = [p for p in est.to_train if p.stage in est.step_s]
    assert est.training_s == pytest.approx(0.25 * sum(p.steps for p in timed)) and len(timed) == 8
    assert "CLIP reranker, judge not timed" in est.lines()[-1]
