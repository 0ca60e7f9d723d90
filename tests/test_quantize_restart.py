"""The codebook's dead-code restart (models/quantize.py): a restarted code waits ``restart_patience`` updates without
a vector before it is restarted again, a code that stays unused is restarted, the step's ``dead`` and ``restarted``
counts are taken before the restarts, and the rule is part of what a checkpoint is recorded as made from. (The
restart reads nothing back to the host: tests/test_host_syncs.py.)"""
from __future__ import annotations

import pytest
import torch

from lverse_core import provenance
from lverse_core.config import ConfigError, load_profile
from lverse_core.models.augvae import RESTART_PATIENCE, AugVAE
from lverse_core.models.quantize import EMAVectorQuantizer
from lverse_core.training.augvae_train import augvae_made_from, checkpoint_path
from tests.test_augvae import synthetic_images


def _unused(q: EMAVectorQuantizer, n: int = 16) -> dict[str, torch.Tensor]:
    """One update in which every vector goes to code 0: no other code gets a hit."""
    return q.update_(torch.randn(n, q.dim), torch.zeros(n, dtype=torch.long))


def test_a_restarted_code_is_not_restarted_again_before_its_patience():
    q = EMAVectorQuantizer(8, 2, dead_code_threshold=1.0, restart_patience=3).train()
    restarted = [_unused(q)["restarted"] for _ in range(7)]
    # codes 1..7 never had a vector: restarted at the first update, then after three updates in a row without one
    assert [int(r[1:].sum()) for r in restarted] == [7, 0, 0, 7, 0, 0, 7]
    assert not any(r[0] for r in restarted)  # code 0 gets every vector
    # between restarts the codes sit below the threshold (0.99 and 0.98 of it): the count alone would restart them
    _unused(q)
    assert (q.cluster_size[1:] < 1.0).all() and q.idle_updates[1:].eq(1).all()
    # restart_patience 0 is the rule before the counter: a restarted code is restarted again at every update
    old = EMAVectorQuantizer(8, 2, dead_code_threshold=1.0, restart_patience=0).train()
    assert [int(_unused(old)["restarted"][1:].sum()) for _ in range(3)] == [7, 7, 7]


def test_a_code_that_stays_unused_is_restarted_and_one_with_rare_hits_is_not():
    q = EMAVectorQuantizer(4, 2, decay=0.5, dead_code_threshold=1.0, restart_patience=3).train()
    q.cluster_size.fill_(40.0)  # all four were well used
    q.idle_updates.zero_()
    code3_restarts = []
    for t in range(12):
        # code 0 gets most vectors; code 2 one vector every third update (its count falls below 1, but it is used)
        codes = torch.zeros(16, dtype=torch.long)
        if t % 3 == 2:
            codes[0] = 2
        out = q.update_(torch.randn(16, 2), codes)
        assert not out["restarted"][[0, 2]].any()
        code3_restarts.append(bool(out["restarted"][3]))
        if t == 7:
            assert q.cluster_size[2] < 1.0
    # codes 1 and 3 get nothing: 40 * 0.5**t falls below 1 at t = 6 (the 6th update), the patience is long past
    assert code3_restarts.index(True) == 5
    assert code3_restarts == [False] * 5 + [True, False, False, True, False, False, True]


def test_a_step_counts_its_dead_codes_before_the_restarts():
    """``dead``: below the threshold and without a vector in the step, or restarted by it; not 0 by construction."""
    q = EMAVectorQuantizer(6, 2, dead_code_threshold=1.0, restart_patience=2).train()
    q.cluster_size.copy_(torch.tensor([5.0, 0.5, 0.5, 0.5, 5.0, 5.0]))
    q.idle_updates.copy_(torch.tensor([0, 0, 5, 5, 0, 0]))
    first = q.update_(torch.randn(4, 2), torch.tensor([0, 0, 1, 4]))  # 2 and 3 below, idle long: restarted
    second = q.update_(torch.randn(4, 2), torch.tensor([0, 2, 4, 5]))  # 2 hit after its restart
    stats = q.step_statistics([first, second])
    # 1 was hit (below the threshold, but used: alive); 2 and 3 were restarted (dead before), 3 is unhit again
    assert first["restarted"].tolist() == [False, False, True, True, False, False]
    assert stats["dead"].item() == 2 and stats["restarted"].item() == 2
    assert stats["dead"].dtype == torch.float64
    # without updates (eval mode): the codes below the threshold now
    assert q.step_statistics([])["dead"].item() == int((q.cluster_size < 1.0).sum())


def test_augvae_reports_dead_codes_the_step_restarted(tmp_path):
    cfg = load_profile("ci", runs_dir=str(tmp_path), **{"augvae.dead_code_threshold": 1.0, "augvae.data_init": True,
                                                         "augvae.ema_update": "per_level"})
    torch.manual_seed(0)
    model = AugVAE.from_config(cfg, "ml").train()
    x = synthetic_images(8, cfg.data.image_size)
    model(x)  # the first step initialises the codebook from encoder vectors
    q = model.quantizer
    far = slice(q.codebook_size - 20, None)
    q.embed[far] = 1e4  # 20 codes no vector comes near, their counts gone, idle for long
    q.embed_avg[far] = 1e4
    q.cluster_size[far] = 0.0
    q.idle_updates[far] = 10 ** 6
    _, out = model(x)
    assert out["restarted"].item() >= 20 and out["dead"].item() >= 20  # read after the restarts, it was 0
    assert (q.embed[far].abs() < 1e3).all()  # restarted from encoder vectors
    _, out = model(x)
    assert out["restarted"].item() < 20  # not restarted again a step later


def test_patience_is_given_in_steps_and_kept_in_the_model_args(tmp_path):
    def model(variant="ml", **over):
        return AugVAE.from_config(load_profile("ci", runs_dir=str(tmp_path), **over), variant)

    ml = model(**{"augvae.ema_update": "per_level"})
    assert ml.quantizer.restart_patience == RESTART_PATIENCE * ml.n_levels  # one update per level and step
    assert "restart_patience" not in ml.args  # the default: checkpoints written before the setting still match
    assert model(**{"augvae.ema_update": "pooled"}).quantizer.restart_patience == RESTART_PATIENCE
    ml3 = model(**{"augvae.restart_patience": 3, "augvae.ema_update": "per_level"})
    assert ml3.args["restart_patience"] == 3
    sl = AugVAE.ml_to_sl(ml3)  # the SL finetune keeps the ML's setting; its one level updates once per step
    assert sl.args["restart_patience"] == 3 and sl.quantizer.restart_patience == 3 * len(sl.quantized_levels())
    # a state dict written before the counter loads; its codes count as just hit
    state = {k: v for k, v in ml.state_dict().items() if not k.endswith("idle_updates")}
    fresh = model(**{"augvae.ema_update": "per_level"})
    fresh.load_state_dict(EMAVectorQuantizer.complete_state(state, "quantizer."))
    assert fresh.quantizer.idle_updates.eq(0).all()
    with pytest.raises(ConfigError, match="augvae.restart_patience"):
        load_profile("ci", **{"augvae.restart_patience": -1})
    with pytest.raises(ValueError, match="restart_patience"):
        EMAVectorQuantizer(8, 2, restart_patience=-2)


def test_a_checkpoint_made_under_another_restart_rule_is_stale(tmp_path):
    cfg = load_profile("ci", runs_dir=str(tmp_path))
    assert cfg.augvae.dead_code_threshold > 0
    path = checkpoint_path(cfg, "ml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"a finished AugVAE-ML")
    made = augvae_made_from(cfg, "ml")
    assert made.config["augvae.restart_patience"] == RESTART_PATIENCE
    # a checkpoint recorded before the setting existed was made under the rule before it
    before = provenance.MadeFrom(made.kind, {k: v for k, v in made.config.items() if k != "augvae.restart_patience"},
                                 made.inputs, made.artefact, made.architecture)
    provenance.record(path, before)
    decision = provenance.decide(path, made)
    assert decision.state == "stale" and "augvae.restart_patience (not set) -> 10" in decision.summary()
    provenance.record(path, made)
    assert provenance.decide(path, made).ok
    other = augvae_made_from(load_profile("ci", runs_dir=str(tmp_path), **{"augvae.restart_patience": 0}), "ml")
    assert provenance.decide(path, other).summary() == "stale: augvae.restart_patience 10 -> 0"
    # without restarts the patience shapes nothing: a record from before the setting still matches
    off = load_profile("ci", runs_dir=str(tmp_path), **{"augvae.dead_code_threshold": 0.0})
    made_off = augvae_made_from(off, "ml")
    assert "augvae.restart_patience" not in made_off.config
    provenance.record(path, made_off)
    assert provenance.decide(path, augvae_made_from(
        load_profile("ci", runs_dir=str(tmp_path), **{"augvae.dead_code_threshold": 0.0,
                                                      "augvae.restart_patience": 3}), "ml")).ok


def test_a_finished_checkpoint_written_before_the_counter_still_loads(tmp_path):
    """Without restarts (the paper profile, converted official weights) a checkpoint from before the counter is
    current, and loads: its codes count as just hit."""
    from lverse_core.training.augvae_train import load_augvae
    from lverse_core.training.loop import save_checkpoint

    cfg = load_profile("ci", runs_dir=str(tmp_path), **{"augvae.dead_code_threshold": 0.0})
    model = AugVAE.from_config(cfg, "ml")
    state = {k: v for k, v in model.state_dict().items() if k != "quantizer.idle_updates"}
    path = checkpoint_path(cfg, "ml")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"kind": "augvae-ml", "model_args": {**model.args, "variant": "ml"}, "model": state,
                           "step": cfg.augvae_train.ml_steps, "finished": True})
    made = augvae_made_from(cfg, "ml")
    provenance.record(path, provenance.MadeFrom(made.kind, dict(made.config), made.inputs, made.artefact))
    loaded = load_augvae(cfg, "ml")
    assert loaded.quantizer.idle_updates.eq(0).all()
    assert torch.equal(loaded.quantizer.embed, model.quantizer.embed)


def test_codes_a_start_leaves_without_vectors_are_due_at_once():
    """k-means clusters left empty (and a randn codebook's codes) never had a vector: restarted at their first
    update below the threshold; the clusters with vectors wait for the patience."""
    q = EMAVectorQuantizer(6, 2, dead_code_threshold=1.0, restart_patience=5).train()
    flat = torch.tensor([[0.0, 0.0], [10.0, 10.0]]).repeat(4, 1)  # two distinct vectors: four clusters stay empty
    q.init_kmeans_(flat, iters=2)
    hit = q.cluster_size > 0
    assert int(hit.sum()) == 2
    assert torch.equal(q.idle_updates, torch.where(hit, 0, 5))
    first = int(hit.nonzero()[0, 0])
    out = q.update_(torch.randn(8, 2), torch.full((8,), first))  # one of the two clusters gets every vector
    assert torch.equal(out["restarted"], ~hit)  # the empty ones restart; the other cluster (count 4) is alive
    fresh = EMAVectorQuantizer(6, 2, dead_code_threshold=1.0, restart_patience=5).train()  # randn, counts 0
    assert fresh.update_(torch.randn(8, 2), torch.zeros(8, dtype=torch.long))["restarted"][1:].all()
