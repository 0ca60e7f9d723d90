"""The claims experiment (per-seed isolation, arm configurations) and its scorecard (notebook 07)."""
import numpy as np
import pytest

from lverse_core.config import load_profile
from lverse_core.evaluation.claims import CONTRADICTED, INCONCLUSIVE, NO_DIFFERENCE, NOT_MEASURED, SUPPORTED
from lverse_core.pipeline import execute
from lverse_core.evaluation.claims_experiment import (AUGVAE_ARMS, BIART_ARMS, CLAIM_ROWS, biart_arm_config,
                                                      budgets, run_claims, seed_config)
from lverse_core.evaluation.scorecard import scorecard


def test_each_seed_gets_its_own_data_runs_and_the_claims_budgets():
    cfg = load_profile("smoke")
    a, b = seed_config(cfg, 0), seed_config(cfg, 1)
    assert a.seed == 0 and b.seed == 1
    assert a.data_root == cfg.data_root != b.data_root  # the main run's seed: the main run's data set
    assert a.runs_root != cfg.runs_root != b.runs_root
    assert str(a.runs_root).startswith(str(cfg.runs_root))  # under the profile's runs/, never its checkpoints
    bud = budgets(cfg)
    assert a.augvae_train.ml_steps == bud["ml_steps"] and a.biart_train.steps == bud["biart_steps"]
    assert a.augvae_train.baseline_steps == bud["ml_steps"] + bud["sl_steps"]  # SL from scratch: the same total
    assert cfg.augvae_train.ml_steps == load_profile("smoke").augvae_train.ml_steps  # cfg itself unchanged
    # the profile's own reranking in every arm (candidates and likelihood rule of both directions)
    assert a.sampling == cfg.sampling and bud["n_candidates"] == a.sampling.n_candidates
    zero = load_profile("ci", **{"claims.ml_steps": 0, "claims.biart_steps": 0})
    assert budgets(zero)["ml_steps"] == zero.augvae_train.ml_steps  # 0 = the profile's own


def test_arms_differ_from_the_papers_model_in_one_switch():
    cfg = seed_config(load_profile("ci"), 0)
    paper = biart_arm_config(cfg, "bidirectional")
    assert paper.biart == cfg.biart and paper.biart_train == cfg.biart_train
    assert biart_arm_config(cfg, "no_segment").biart.segment_embedding is False
    assert biart_arm_config(cfg, "shared_positions").biart.positions == "shared"
    one = biart_arm_config(cfg, "t2i_only").biart_train
    assert one.direction == "t2i" and one.steps == cfg.biart_train.steps // 2  # equal steps per direction
    with pytest.raises(ValueError, match="unknown BiART arm"):
        biart_arm_config(cfg, "bigger")


def _measures(shift: float):
    """Made-up measures of every arm for three seeds; the method arms beat their controls by ``shift``."""
    keys = {k for _, _, (_, k), _, _ in CLAIM_ROWS} | {k for _, _, _, (_, k), _ in CLAIM_ROWS}
    out = {}
    for seed in range(3):
        out[seed] = {arm: {k: 10.0 + seed for k in keys} for arm in (*AUGVAE_ARMS, *BIART_ARMS)}
        for _, _, (m_arm, m_key), _, better in CLAIM_ROWS:
            out[seed][m_arm][m_key] = 10.0 + seed + (shift if better == "higher" else -shift) + 0.01 * seed
    return out


def test_scorecard_covers_every_claim_and_follows_the_intervals():
    claims = load_profile("ci").claims

    def card_of(measures):
        card = scorecard(measures, claims, resamples=500)
        ours = (card["method arm"] + " | " + card["control arm"]).isin(
            [f"{m[0]}: {m[1]} | {c[0]}: {c[1]}" for _, _, m, c, _ in CLAIM_ROWS])
        return card[ours].reset_index(drop=True)  # the experiment's rows, in their order

    card = card_of(_measures(1.0))
    assert list(card["measure"]) == [r[1] for r in CLAIM_ROWS] and set(card["seeds"]) == {3}
    # every method beats its control on every seed, except where two rows read one value differently
    method_keys = [(a, k) for _, _, (a, k), _, _ in CLAIM_ROWS]
    clean = [method_keys.count(mk) == 1 for mk in method_keys]
    assert set(card.loc[clean, "verdict"]) == {SUPPORTED}
    assert set(card_of(_measures(-1.0)).loc[clean, "verdict"]) == {CONTRADICTED}
    assert set(card_of(_measures(0.0))["verdict"]) <= {INCONCLUSIVE, NO_DIFFERENCE, SUPPORTED, CONTRADICTED}
    broken = _measures(1.0)
    del broken[1]["ml_per_level"]["fid"]
    out = card_of(broken)
    gone = out["control arm"] == "ml_per_level: fid"
    assert list(out.loc[gone, "verdict"]) == [f"{NOT_MEASURED}: no ml_per_level: fid on seed 1"]
    assert set(out.loc[np.array(clean) & ~gone.to_numpy(), "verdict"]) == {SUPPORTED}  # the other rows still decide


def test_a_plain_run_leaves_the_claims_notebook_out():
    plain = [p.name[:2] for p in execute.select_notebooks(None)]
    assert "07" not in plain and plain[:2] == ["00", "01"]
    assert [p.name[:2] for p in execute.select_notebooks("07")] == ["07"]


def test_real_data_is_refused_with_what_to_do_instead():
    cfg = load_profile("paper")
    with pytest.raises(ValueError, match="embedded data set.*ci, smoke or gpu"):
        run_claims(cfg, log=lambda m: None)


def test_later_seeds_get_the_first_seeds_judge_and_reranker(monkeypatch, tmp_path):
    """The judge and the reranker are trained once, on the first seed's draw, and copied to every later seed's run
    folder before it is prepared (where every measure, FID included, looks for them)."""
    from lverse_core.evaluation import claims_experiment, claims_measures
    import lverse_core.evaluation.judge as judge_mod

    cfg = load_profile("ci", **{"claims.seeds": [3, 1, 2], "runs_dir": str(tmp_path / "runs")})
    events = []

    def prepare(cfg_s, log, arms):
        events.append(("prepare", cfg_s.seed, sorted(p.name for p in cfg_s.runs_root.glob("*.pt"))))
        if cfg_s.seed == 3:  # the first seed trains them
            cfg_s.runs_root.mkdir(parents=True)
            for name in claims_experiment.SHARED:
                (cfg_s.runs_root / name).write_bytes(f"{name} of seed 3".encode())

    monkeypatch.setattr(claims_experiment, "prepare_seed", prepare)
    monkeypatch.setattr(claims_experiment, "adopt_main_run", lambda cfg, cfg_s, log, instruments=True: [])
    monkeypatch.setattr(claims_measures, "test_set", lambda cfg_s: {})
    monkeypatch.setattr(judge_mod, "ensure_judge", lambda cfg_s: (cfg_s.runs_root / "judge.pt").read_text())
    used = []
    monkeypatch.setattr(claims_measures, "augvae_measures", lambda cfg_s, arm, test, judge, log: used.append(judge) or {})
    monkeypatch.setattr(claims_measures, "biart_measures",
                        lambda cfg_s, arm, test, judge, log: used.append(judge) or {})
    (tmp_path / "runs").mkdir()
    out = run_claims(cfg, log=lambda m: None)
    assert list(out) == [3, 1, 2] and set(used) == {"judge.pt of seed 3"}
    assert events[0] == ("prepare", 3, []) and events[1][2] == events[2][2] == sorted(claims_experiment.SHARED)
    first, later = seed_config(cfg, 3), seed_config(cfg, 2)
    (first.runs_root / "judge.pt").write_text("retrained")
    claims_experiment.share_instruments(first, later)  # a changed instrument is copied again
    assert (later.runs_root / "judge.pt").read_text() == "retrained" and not list(later.runs_root.glob(".*tmp*"))
    (first.runs_root / "judge.pt").unlink()
    with pytest.raises(FileNotFoundError, match="first of claims.seeds"):
        claims_experiment.share_instruments(first, later)
