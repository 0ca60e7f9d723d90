"""The claims notebook's runner: per-seed isolation, arm configurations, the scorecard (notebook 07)."""
import pytest

from lverse_core.config import load_profile
from lverse_core.evaluation.claims import CONTRADICTED, INCONCLUSIVE, SUPPORTED
from lverse_core.pipeline import runner
from lverse_core.pipeline.claims_run import (AUGVAE_ARMS, BIART_ARMS, CLAIM_ROWS, biart_arm_config, budgets,
                                             run_claims, scorecard, seed_config)


def test_each_seed_gets_its_own_data_runs_and_the_claims_budgets():
    cfg = load_profile("smoke")
    a, b = seed_config(cfg, 0), seed_config(cfg, 1)
    assert a.seed == 0 and b.seed == 1
    assert a.data_root != b.data_root != cfg.data_root and a.runs_root != cfg.runs_root
    assert str(a.runs_root).startswith(str(cfg.runs_root))  # under the profile's runs/, never its checkpoints
    bud = budgets(cfg)
    assert a.augvae_train.ml_steps == bud["ml_steps"] and a.biart_train.steps == bud["biart_steps"]
    assert a.augvae_train.baseline_steps == bud["ml_steps"] + bud["sl_steps"]  # SL from scratch: the same total
    assert cfg.augvae_train.ml_steps == load_profile("smoke").augvae_train.ml_steps  # cfg itself unchanged
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
    card = scorecard(_measures(1.0))
    assert len(card) == len(CLAIM_ROWS) and set(card["seeds"]) == {3}
    # every method beats its control on every seed, except where two rows read one value differently
    method_keys = [(a, k) for _, _, (a, k), _, _ in CLAIM_ROWS]
    clean = [method_keys.count(mk) == 1 for mk in method_keys]
    assert set(card.loc[clean, "verdict"]) == {SUPPORTED}
    assert set(scorecard(_measures(-1.0)).loc[clean, "verdict"]) == {CONTRADICTED}
    assert set(scorecard(_measures(0.0))["verdict"]) <= {INCONCLUSIVE, SUPPORTED, CONTRADICTED}
    broken = _measures(1.0)
    del broken[1]["ml_per_level"]["fid"]
    with pytest.raises(KeyError, match="run every arm"):
        scorecard(broken)


def test_a_plain_run_leaves_the_claims_notebook_out():
    plain = [p.name[:2] for p in runner.select_notebooks(None)]
    assert "07" not in plain and plain[:2] == ["00", "01"]
    assert [p.name[:2] for p in runner.select_notebooks("07")] == ["07"]


def test_real_data_is_refused_with_what_to_do_instead():
    cfg = load_profile("paper")
    with pytest.raises(ValueError, match="embedded data set.*ci, smoke or gpu"):
        run_claims(cfg, log=lambda m: None)


def test_one_judge_measures_every_seed(monkeypatch):
    """The judge is trained once, on the first seed's draw, and the same instrument scores every seed's arms."""
    from lverse_core.pipeline import claims_run
    import lverse_core.evaluation.judge as judge_mod

    trained, used = [], []
    monkeypatch.setattr(claims_run, "prepare_seed", lambda cfg_s, log: None)
    monkeypatch.setattr(claims_run, "_test_set", lambda cfg_s: {"seed": cfg_s.seed})
    monkeypatch.setattr(judge_mod, "ensure_judge", lambda cfg_s: trained.append(cfg_s.seed) or f"judge{cfg_s.seed}")
    monkeypatch.setattr(claims_run, "augvae_measures", lambda cfg_s, arm, test, judge: used.append(judge) or {})
    monkeypatch.setattr(claims_run, "biart_measures", lambda cfg_s, arm, test, judge, log: used.append(judge) or {})
    out = run_claims(load_profile("ci", **{"claims.seeds": [3, 1, 2]}), log=lambda m: None)
    assert trained == [3] and set(used) == {"judge3"} and list(out) == [3, 1, 2]
    assert len(used) == 3 * (len(AUGVAE_ARMS) + len(BIART_ARMS))
