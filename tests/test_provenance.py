"""Provenance records: what an artefact was made from decides whether it may be reused (lverse_core/provenance.py)."""
from __future__ import annotations

import json
import os

import pytest

from lverse_core import provenance as P
from lverse_core.config import load_profile


def _made(cfg, kind="augvae-sl", **inputs):
    return P.made_from(cfg, kind, inputs or {"data set": "shapes:aaa"}, "AugVAE-SL checkpoint")


def _artefact(tmp_path, content=b"weights v1"):
    path = tmp_path / "runs" / "augvae_sl.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_a_record_round_trips_and_holds_resolved_settings_without_cadence_keys(tmp_path):
    cfg = load_profile("ci", **{"augvae_train.precision": "auto", "biart_train.precision": "auto"})
    made = _made(cfg)
    path = _artefact(tmp_path)
    P.record(path, made)
    assert P.decide(path, made).ok and P.decide(path, made).summary() == "ok"
    rec = P.read(path)
    assert rec["artefact"] == "AugVAE-SL checkpoint" and rec["inputs"] == {"data set": "shapes:aaa"}
    assert rec["content"]["sha256"] == P.content_digest(path) and P.file_id(path).startswith("sha256:")
    # precision recorded as it resolved on this machine, never "auto"
    assert rec["config"]["augvae_train.precision"] in ("fp32", "bf16")
    assert P.config_values(cfg, "biart")["biart_train.precision"] in ("fp32", "bf16")
    # cadence, timeouts, workers and folders do not shape a result: changing them keeps the artefact current
    cadence = load_profile("ci", **{"augvae_train.precision": "auto", "augvae_train.log_every": 1,
                                    "augvae_train.ckpt_every": 1, "augvae_train.timeout_s": 5.0,
                                    "data.num_workers": 2, "runs_dir": str(tmp_path / "elsewhere")})
    assert P.decide(path, _made(cadence)).ok
    assert not any(k.endswith(("log_every", "ckpt_every", "timeout_s", "num_workers")) for k in rec["config"])
    # ML is not shaped by the SL budget, SL not by the ML budget (ML reaches SL as an input, by its id)
    assert "augvae_train.sl_steps" not in P.config_values(cfg, "augvae-ml")
    assert "augvae_train.ml_steps" not in P.config_values(cfg, "augvae-sl")


def test_a_changed_setting_is_named_with_old_and_new_values(tmp_path):
    path = _artefact(tmp_path)
    P.record(path, _made(load_profile("ci")))
    now = _made(load_profile("ci", **{"augvae_train.sl_steps": 13, "seed": 4}))
    d = P.decide(path, now)
    assert d.state == "stale" and d.summary() == "stale: augvae_train.sl_steps 10 -> 13; seed 0 -> 4"
    with pytest.raises(P.StaleArtefactError,
                       match=r"AugVAE-SL checkpoint .*augvae_sl.pt is stale.*sl_steps 10 -> 13.*seed 0 -> 4.*"
                             r"Re-run notebooks/01_train_augvae.ipynb"):
        P.require(path, now)
    lines = []
    assert P.retrain_reason(path, now, log=lines.append).startswith("stale: augvae_train.sl_steps")
    assert lines == [f"AugVAE-SL checkpoint {path}: rebuilding it, stale: augvae_train.sl_steps 10 -> 13; "
                     f"seed 0 -> 4"]


def test_a_changed_input_file_of_the_same_size_makes_its_products_stale(tmp_path):
    cfg = load_profile("ci")
    ml = _artefact(tmp_path, b"ML weights A")
    P.record(ml, P.made_from(cfg, "augvae-ml", {"data set": "shapes:aaa"}))
    sl = tmp_path / "runs" / "sl.pt"
    sl.write_bytes(b"SL")
    P.record(sl, _made(cfg, **{"AugVAE-ML checkpoint": P.file_id(ml)}))
    assert P.decide(sl, _made(cfg, **{"AugVAE-ML checkpoint": P.file_id(ml)})).ok
    st = ml.stat()
    ml.write_bytes(b"ML weights B")  # retrained: same size, other content
    os.utime(ml, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    d = P.decide(sl, _made(cfg, **{"AugVAE-ML checkpoint": P.input_id(ml)}))
    assert d.state == "stale" and d.changed_inputs == ["AugVAE-ML checkpoint"]
    assert "input AugVAE-ML checkpoint changed" in d.summary()
    ml.unlink()
    d = P.decide(sl, _made(cfg, **{"AugVAE-ML checkpoint": P.input_id(ml)}))
    assert d.summary() == "stale: input AugVAE-ML checkpoint is missing"


def test_an_artefact_without_a_record_is_unknown(tmp_path):
    made = _made(load_profile("ci"))
    path = _artefact(tmp_path)
    d = P.decide(path, made)
    assert d.state == "unknown" and "no record" in d.summary()
    with pytest.raises(P.StaleArtefactError, match=r"augvae_sl.pt may be stale: it has no record.*Re-run notebooks/01"):
        P.require(path, made)
    lines = []
    assert P.retrain_reason(path, made, log=lines.append).startswith("unknown") and len(lines) == 1
    assert P.decide(tmp_path / "absent.pt", made).state == "missing"
    assert P.retrain_reason(tmp_path / "absent.pt", made, log=lines.append) == "missing" and len(lines) == 1


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]", json.dumps({"format": "lverse-made-from",
                                                                           "version": 99}).encode()])
def test_a_damaged_record_is_unknown_and_named(tmp_path, damage):
    made = _made(load_profile("ci"))
    path = _artefact(tmp_path)
    P.record(path, made)
    P.sidecar(path).write_bytes(damage)
    d = P.decide(path, made)
    assert d.state == "unknown" and "augvae_sl.pt.made-from.json" in d.reason
    with pytest.raises(P.StaleArtefactError, match="made-from.json"):
        P.require(path, made)
    assert P.file_id(path) == "sha256:" + P._sha256(path)[:24]  # an id is still the content's, never the damage's


def test_a_file_changed_after_its_record_is_unknown(tmp_path):
    made = _made(load_profile("ci"))
    path = _artefact(tmp_path)
    P.record(path, made)
    path.write_bytes(b"other weights!")
    d = P.decide(path, made)
    assert d.state == "unknown" and "changed after its record" in d.reason


def test_the_cached_hash_is_used_only_while_size_and_mtime_match(tmp_path, monkeypatch):
    made = _made(load_profile("ci"))
    path = _artefact(tmp_path, b"AAAA")
    P.record(path, made)
    first = P.file_id(path)
    hashed = []
    real = P._sha256
    monkeypatch.setattr(P, "_sha256", lambda p: hashed.append(p) or real(p))
    assert P.file_id(path) == first and P.decide(path, made).ok and hashed == []  # from the cache
    st = path.stat()
    path.write_bytes(b"BBBB")  # same size ...
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the same mtime: the cache cannot tell
    assert P.file_id(path) == first and hashed == []
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # one nanosecond later: not trusted, hashed again
    assert P.file_id(path) != first and len(hashed) == 1
    assert P.decide(path, made).state == "unknown"
    path.write_bytes(b"AAAA")  # the recorded bytes again, under a new mtime: same id, cache re-keyed
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2))
    hashed.clear()
    assert P.file_id(path) == first and len(hashed) == 1
    assert P.file_id(path) == first and len(hashed) == 1 and P.decide(path, made).ok


def test_a_converted_artefact_is_checked_on_its_architecture_only(tmp_path):
    cfg = load_profile("ci")
    path = _artefact(tmp_path)
    conv = P.made_from(cfg, "augvae-sl", {"official checkpoint": "sha256:0f"}, architecture=("augvae",))
    P.record(path, conv, made_by="conversion")
    trained_here = P.made_from(load_profile("ci", **{"seed": 5}), "augvae-sl", {"data set": "shapes:x"},
                               architecture=("augvae",))
    assert P.decide(path, trained_here).ok  # not trained here: seed and data set do not apply
    other = P.made_from(load_profile("ci", **{"augvae.codebook_size": 64}), "augvae-sl", {},
                        architecture=("augvae",))
    assert P.decide(path, other).summary() == "stale: augvae.codebook_size 128 -> 64"


def test_doctor_reports_each_artefacts_state(workdir, monkeypatch):
    from lverse_core.pipeline import doctor as D
    from lverse_core.training.augvae_train import augvae_made_from, checkpoint_path

    monkeypatch.setattr(D, "_java_version", lambda: "java 17")
    cfg = load_profile("ci")
    ml, sl = checkpoint_path(cfg, "ml"), checkpoint_path(cfg, "sl")
    ml.parent.mkdir(parents=True)
    ml.write_bytes(b"ML")
    P.record(ml, augvae_made_from(load_profile("ci", **{"augvae_train.ml_steps": 7}), "ml"))
    sl.write_bytes(b"SL made before records")
    found = {f.check: f for f in D.diagnose(cfg, timing=False)}
    assert not found["AugVAE-ML"].ok and found["AugVAE-ML"].message.startswith("stale: augvae_train.ml_steps 7 -> 20")
    assert "01_train_augvae" in found["AugVAE-ML"].fix
    assert not found["AugVAE-SL"].ok
    assert found["AugVAE-SL"].message.startswith("unknown, may be stale: it has no record")
    assert found["BiART"].ok and found["BiART"].message.startswith("missing")
    assert found["data set"].ok and found["data set"].message.startswith("missing")
    P.record(ml, augvae_made_from(cfg, "ml"))
    assert {f.check: f for f in D.diagnose(cfg, timing=False)}["AugVAE-ML"].message.startswith("ok")


def test_claims_measures_are_reused_only_while_their_checkpoints_are_the_same(workdir):
    from lverse_core.evaluation.judge import judge_path
    from lverse_core.evaluation import claims_experiment
    from lverse_core.training.augvae_train import checkpoint_path

    cfg_s = claims_experiment.seed_config(load_profile("ci"), 0)
    sl = checkpoint_path(cfg_s, "sl")
    sl.parent.mkdir(parents=True)
    sl.write_bytes(b"SL, first training")
    judge_path(cfg_s).write_bytes(b"judge")
    calls = []

    def compute():
        calls.append(1)
        return {"psnr_db": 20.0 + len(calls)}

    assert claims_experiment._cached(cfg_s, "sl", compute) == {"psnr_db": 21.0}
    assert claims_experiment._cached(cfg_s, "sl", compute) == {"psnr_db": 21.0} and len(calls) == 1  # reused
    sl.write_bytes(b"SL, retrained here")  # the same budget, another checkpoint: measured again
    assert claims_experiment._cached(cfg_s, "sl", compute) == {"psnr_db": 22.0}


def test_caption_files_are_read_only_while_the_models_that_drew_them_are_current(workdir):
    from lverse_core.pipeline.eval_tables import captions_made_from, save_caption_files

    cfg = load_profile("ci")
    (cfg.runs_root / "codes").mkdir(parents=True)
    for name in ("biart.pt", "augvae_sl.pt", "clip_reranker.pt", "codes/test_codes.npy"):
        (cfg.runs_root / name).write_bytes(name.encode())
    files = save_caption_files(cfg, {"L-Verse (truncated)": {1: "a red circle."}}, {1: ["a red circle."]},
                               made=captions_made_from(cfg))
    path = files["L-Verse (truncated)"]
    P.require(path, captions_made_from(cfg))  # as notebook 06 checks it
    (cfg.runs_root / "biart.pt").write_bytes(b"BiART, retrained")
    with pytest.raises(P.StaleArtefactError,
                       match=r"generated captions \(test\) .* is stale.*input biart changed.*04_table2_image_to_text"):
        P.require(path, captions_made_from(cfg))


def _tree(root):
    """A real-data-like folder: class folders with images two levels below the asset folder."""
    for cls in ("n01", "n02"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(3):
            (root / "train" / cls / f"{i}.JPEG").write_bytes(b"x" * (10 + i))
    return root


@pytest.mark.parametrize("change", ["edit", "add", "remove", "rename"])
def test_a_recursive_listing_sees_a_change_deep_below_the_asset_folder(tmp_path, change):
    root = _tree(tmp_path / "imagenet")
    before, shallow = P.listing_id([root], recursive=True), P.listing_id([root])
    victim = root / "train" / "n02" / "1.JPEG"
    top = os.stat(root / "train")  # keep the folders' own mtimes: only the deep entry changes
    if change == "edit":
        victim.write_bytes(b"y" * 99)
    elif change == "add":
        (root / "train" / "n02" / "9.JPEG").write_bytes(b"z")
    elif change == "remove":
        victim.unlink()
    else:
        victim.rename(victim.with_name("7.JPEG"))
    os.utime(root / "train", ns=(top.st_atime_ns, top.st_mtime_ns))
    assert P.listing_id([root], recursive=True) != before
    assert P.listing_id([root]) == shallow  # one level deep cannot see it: why the data set id walks the tree


def test_a_recursive_listing_is_stable_and_survives_a_symlink_loop(tmp_path):
    root = _tree(tmp_path / "imagenet")
    (root / "train" / "n01" / "loop").symlink_to(root, target_is_directory=True)
    assert P.listing_id([root], recursive=True) == P.listing_id([root], recursive=True)
    assert P.listing_id([root], recursive=True).startswith("listing:r:")


def test_a_real_data_sets_id_changes_with_an_image_below_its_class_folder(tmp_path):
    from lverse_core.data import identity

    root = _tree(tmp_path / "imagenet")
    (tmp_path / "karpathy.json").write_text("{}")
    (tmp_path / "coco").mkdir()
    cfg = load_profile("ci", **{"data.root": str(tmp_path / "d"), "data.source": "coco",
                                "assets.imagenet_root": str(root), "assets.coco_root": str(tmp_path / "coco"),
                                "assets.coco_karpathy_json": str(tmp_path / "karpathy.json")})
    before = identity.dataset_id(cfg)
    assert identity.dataset_id(cfg) == before
    victim = root / "train" / "n01" / "0.JPEG"
    top = os.stat(root / "train")
    victim.write_bytes(b"another image of another size")
    os.utime(root / "train", ns=(top.st_atime_ns, top.st_mtime_ns))
    identity._LISTINGS.clear()  # a later process walks the tree again
    assert identity.dataset_id(cfg) != before
