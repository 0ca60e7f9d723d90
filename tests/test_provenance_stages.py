"""Nothing stale is reused: after a run, a changed setting rebuilds exactly the artefacts it shapes.

The stages are called directly (as notebooks 00-03 call them) at tiny sizes of the ``ci`` profile in a tmp
LVERSE_WORKDIR; one run is made once per module and copied for each test (mtimes kept, so the cached hashes hold).
"""
from __future__ import annotations

import shutil

import pytest

from lverse_core import provenance as P
from lverse_core.config import load_profile
from lverse_core.training.loop import CheckpointError

TINY = {"data.n_train": 48, "data.n_val": 8, "data.n_test": 8, "data.ood_images": 0, "data.gen_workers": 1,
        "augvae_train.ml_steps": 2, "augvae_train.sl_steps": 2, "augvae_train.baseline_steps": 0,
        "augvae_train.unquantized_steps": 0, "augvae_train.ckpt_every": 1, "biart_train.steps": 2,
        "biart_train.warmup_steps": 1, "clip.train_steps": 2, "eval.judge_steps": 2}


def tiny(**over):
    return load_profile("ci", **{**TINY, **over})


def artefacts(cfg):
    from lverse_core.data.decoded_store import store_path
    from lverse_core.data.tokenizer import tokenizer_path
    from lverse_core.evaluation.judge import judge_path
    from lverse_core.sampling.clip_reranker import reranker_path
    from lverse_core.training.augvae_train import checkpoint_path
    from lverse_core.training.pretokenize import codes_dir

    out = {"data set": cfg.data_root / "COMPLETE.json", "tokenizer": tokenizer_path(cfg),
           "AugVAE-ML": checkpoint_path(cfg, "ml"), "AugVAE-SL": checkpoint_path(cfg, "sl"),
           "BiART": cfg.runs_root / "biart.pt", "CLIP reranker": reranker_path(cfg), "judge": judge_path(cfg)}
    out.update({f"codes {s}": codes_dir(cfg) / f"{s}_codes.npy" for s in ("train", "val", "test")})
    out.update({f"decoded images {s}": store_path(cfg, s) for s in ("train", "val", "test")})
    return out


def run_stages(cfg):
    """Notebooks 00-03's stages, in their order: each reuses what is current and rebuilds the rest."""
    from lverse_core.data.decoded_store import write_store
    from lverse_core.data.shapes_dataset import ensure_dataset
    from lverse_core.data.tokenizer import ensure_tokenizer
    from lverse_core.evaluation.judge import ensure_judge
    from lverse_core.sampling.clip_reranker import ensure_reranker
    from lverse_core.training.augvae_train import train_augvae
    from lverse_core.training.biart_train import paired_tokens, train_biart
    from lverse_core.training.pretokenize import pretokenize

    ensure_dataset(cfg)
    write_store(cfg)
    train_augvae(cfg, "ml", progress=False)
    train_augvae(cfg, "sl", progress=False)
    pretokenize(cfg, device="cpu")
    tok = ensure_tokenizer(cfg)
    ensure_reranker(cfg)
    train_biart(cfg, paired_tokens(cfg, tok, "train"), text_vocab_size=tok.vocab_size, pad_id=tok.pad_id)
    ensure_judge(cfg)


def states(cfg):
    from lverse_core.pipeline.doctor import artefact_decisions

    return {label: d.state for label, d in artefact_decisions(cfg)}


def fingerprint(cfg):
    """Each artefact's content hash and mtime: what tells a rebuilt file from a reused one."""
    return {k: (P.content_digest(p), p.stat().st_mtime_ns) for k, p in artefacts(cfg).items()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("provenance_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LVERSE_WORKDIR", str(work))
        cfg = tiny()
        run_stages(cfg)
        assert set(states(cfg).values()) == {"ok"}, states(cfg)
        return work, fingerprint(cfg)


@pytest.fixture
def run_copy(first_run, tmp_path, monkeypatch):
    work, before = first_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy)  # copy2: mtimes kept
    monkeypatch.setenv("LVERSE_WORKDIR", str(copy))
    return before


def test_a_second_run_with_the_same_settings_reuses_everything(run_copy, capsys):
    cfg = tiny()
    assert fingerprint(cfg) == run_copy
    run_stages(cfg)
    assert fingerprint(cfg) == run_copy
    assert "rebuilding" not in capsys.readouterr().out


def test_an_edited_seed_rebuilds_every_artefact_it_shapes(run_copy, capsys):
    cfg = tiny(seed=1)  # the profile's seed edited, same folders
    before = states(cfg)
    assert {k for k, v in before.items() if v != "ok"} == set(artefacts(cfg)), before  # doctor: nothing is ready
    with pytest.raises(CheckpointError, match=r"AugVAE-SL checkpoint .* is stale.*seed 0 -> 1.*01_train_augvae"):
        from lverse_core.training.augvae_train import load_augvae

        load_augvae(cfg, "sl")
    with pytest.raises(CheckpointError, match=r"BiART checkpoint .* is stale.*seed 0 -> 1.*02_train_biart"):
        from lverse_core.training.biart_train import load_biart

        load_biart(cfg)
    with pytest.raises(CheckpointError, match=r"code file \(test\) .* is stale.*input data set changed"):
        from lverse_core.training.pretokenize import load_codes

        load_codes(cfg, "test")
    with pytest.raises(P.StaleArtefactError, match=r"tokenizer .* is stale.*input data set changed.*02_train_biart"):
        from lverse_core.data.tokenizer import load_tokenizer

        load_tokenizer(cfg)
    run_stages(cfg)
    after = fingerprint(cfg)
    assert set(states(cfg).values()) == {"ok"}
    out = capsys.readouterr().out
    for name, path in artefacts(cfg).items():
        if name == "data set":
            assert after[name][0] != run_copy[name][0]  # regenerated with the new seed
            continue
        assert after[name][1] != run_copy[name][1], f"{name} was reused"  # rewritten, never silently reused
        assert P.read(path)["config"].get("seed", 1) == 1
        if name != "tokenizer":  # a compact vocabulary may come out the same; every trained model may not
            assert after[name][0] != run_copy[name][0], f"{name} has the old seed's content"
    assert "AugVAE-ML checkpoint" in out and "rebuilding it, stale: seed 0 -> 1" in out


def test_more_sl_steps_redo_sl_and_codes_and_retrain_biart(run_copy, capsys):
    from lverse_core.training.augvae_train import train_augvae

    cfg = tiny(**{"augvae_train.sl_steps": 3})
    assert states(cfg)["AugVAE-SL"] == "stale" and states(cfg)["AugVAE-ML"] == "ok"
    train_augvae(cfg, "sl", progress=False)  # notebook 01 retrains SL ...
    now = states(cfg)  # ... and from here on the codes and BiART made from the old SL are not ready
    assert now["codes train"] == now["BiART"] == "stale" and now["AugVAE-SL"] == "ok"
    run_stages(cfg)
    after = fingerprint(cfg)
    rebuilt = {k for k in after if after[k] != run_copy[k]}
    assert rebuilt == {"AugVAE-SL", "codes train", "codes val", "codes test", "BiART"}, rebuilt
    assert set(states(cfg).values()) == {"ok"}
    assert P.read(artefacts(cfg)["BiART"])["inputs"]["AugVAE-SL checkpoint"] == P.file_id(artefacts(cfg)["AugVAE-SL"])
    out = capsys.readouterr().out
    assert "AugVAE-SL checkpoint" in out and "augvae_train.sl_steps 2 -> 3" in out
    assert "BiART checkpoint" in out and "input AugVAE-SL checkpoint changed" in out


def test_a_truncated_checkpoint_is_named_damaged_by_the_doctor_and_retrained(run_copy, capsys):
    from lverse_core.pipeline.doctor import doctor
    from lverse_core.training.augvae_train import checkpoint_path, train_augvae

    cfg = tiny()
    sl = checkpoint_path(cfg, "sl")
    size = sl.stat().st_size
    sl.write_bytes(sl.read_bytes()[: size // 2])  # a copy that stopped half way
    assert doctor(cfg) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("[problem] AugVAE-SL:"))
    assert f"{size // 2:,} bytes, was {size:,}; cut short?" in line
    assert "does not open as a torch checkpoint: damaged" in line
    assert "01_train_augvae" in out.split(line)[1].lstrip("\n").splitlines()[0]  # the fix: the notebook remaking it
    train_augvae(cfg, "sl", progress=False)  # the trainer does not resume it: it trains again
    assert "AugVAE-SL" in capsys.readouterr().out and states(cfg)["AugVAE-SL"] == "ok"
    assert sl.stat().st_size == size
