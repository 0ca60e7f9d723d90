"""The machine decides the precision: CPU classes, ``precision: auto``, faked capabilities, no /proc, the estimate."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from lverse_core import hardware as H
from lverse_core.config import ConfigError, REPO_ROOT, load_profile
from lverse_core.pipeline import doctor as D
from lverse_core.pipeline import estimate as E
from lverse_core.pipeline import processes
from ._limits import HANG_GUARD_S


@pytest.mark.parametrize("capability, flags, onednn, expected", [
    ("AVX512", {"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, "", "amx"),  # Intel Xeon with AMX
    ("AVX512", {"avx2", "avx512f", "avx512_bf16"}, "", "avx512-bf16"),  # AMD EPYC Zen 4
    ("AVX512", {"avx2", "avx512f"}, "", "avx512"),  # AVX-512 without bf16: converted in software
    ("AVX2", {"avx2"}, "", "avx2"),  # AMD EPYC Zen 2/3, most laptops
    ("AVX2", {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, "", "avx2"),  # ATEN_CPU_CAPABILITY=avx2 on an AMX chip
    ("AVX512", {"avx512f", "avx512_bf16", "amx_bf16"}, "AVX2", "avx2"),  # ONEDNN_MAX_CPU_ISA=AVX2
    ("AVX512", {"avx512f", "avx512_bf16", "amx_bf16"}, "AVX512_CORE", "avx512"),  # oneDNN capped below bf16
    ("DEFAULT", set(), "", "other"),  # Arm, Apple silicon
])
def test_the_cpu_class_follows_what_the_kernels_can_use(capability, flags, onednn, expected):
    assert H.classify(capability, flags, onednn) == expected


@pytest.mark.parametrize("cls, bf16", [("amx", True), ("avx512-bf16", True), ("avx512", False), ("avx2", False),
                                       ("other", False)])
def test_auto_is_bf16_only_where_it_is_native_and_explicit_values_win(monkeypatch, cls, bf16):
    monkeypatch.setattr(H, "cpu_class", lambda: cls)
    assert H.resolve_precision("auto", "cpu") == ("bf16" if bf16 else "fp32")
    assert H.resolve_precision("auto", "cuda") == "bf16"
    assert H.resolve_precision("fp32", "cpu") == "fp32"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert H.resolve_precision("bf16", "cpu", what="biart_train.precision") == "bf16"
    assert bool(caught) is not bf16  # pinned bf16 on a CPU that emulates it warns, naming the key and the fix
    if caught:
        assert "biart_train.precision" in str(caught[0].message) and "auto" in str(caught[0].message)
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        H.resolve_precision("fp16", "cpu")
    assert H.resolve_channels_last("auto", "cpu", H.resolve_precision("auto", "cpu")) is not bf16
    assert H.resolve_channels_last("false", "cpu", "fp32") is False and H.resolve_channels_last("true", "cpu", "bf16")


def test_every_embedded_profile_and_paper_dry_leave_the_choice_to_the_machine():
    ci = load_profile("ci")  # the test profile pins FP32: the tests' tolerances are FP32's on every CPU class
    assert (ci.augvae_train.precision, ci.biart_train.precision) == ("fp32", "fp32")
    for name in ("smoke", "gpu", "paper-dry"):
        cfg = load_profile(name)
        assert cfg.augvae_train.channels_last in ("auto", "true"), name
        assert cfg.biart_train.precision == "auto", name
        if name != "paper-dry":  # paper-dry keeps the paper's FP32 AugVAE (§3.5)
            assert cfg.augvae_train.precision == "auto", name
    assert load_profile("paper").augvae_train.precision == "fp32"
    # YAML's booleans still work for the memory format; anything else is an error listing the choices
    assert load_profile("ci", **{"augvae_train.channels_last": False}).augvae_train.channels_last == "false"
    with pytest.raises(ConfigError, match="auto, true, false"):
        load_profile("ci", **{"augvae_train.channels_last": "nhwc"})
    with pytest.raises(ConfigError, match="auto, fp32, bf16"):
        load_profile("ci", **{"augvae_train.precision": "fp16"})


def test_a_faked_avx2_capability_makes_the_machine_avx2_only_and_auto_fp32():
    """ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA make an AVX-512 machine run AVX2 kernels: the plan must follow."""
    code = ("import json; from lverse_core import hardware as H; from lverse_core.config import load_profile\n"
            "print(json.dumps({'cap': H.torch_capability(), 'plan': H.precision_plan(load_profile('smoke'))}))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=HANG_GUARD_S,
                         cwd=REPO_ROOT, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["cap"] == "AVX2"
    assert res["plan"]["cpu_class"] == "avx2"
    assert (res["plan"]["augvae"], res["plan"]["biart"], res["plan"]["augvae_memory_format"]) == ("fp32", "fp32",
                                                                                                  "NHWC")


def test_detection_works_without_proc(monkeypatch):
    """macOS has no /proc: the model comes from sysctl, the class from torch's probe, memory from sysconf."""
    monkeypatch.setattr(H, "_read_proc", lambda name: "")
    monkeypatch.setattr(H, "_sysctl", lambda name: {"machdep.cpu.brand_string": "Apple M2"}.get(name, ""))
    H.cpu_model.cache_clear()
    try:
        assert H.cpu_model() == "Apple M2"
        assert H.cpu_class() in H.CPU_CLASSES
        assert H.total_memory_bytes() > 2**28 and H.available_memory_bytes() == H.total_memory_bytes()
        info = H.describe()
        assert info["model"] == "Apple M2" and info["class"] == H.cpu_class()
    finally:
        H.cpu_model.cache_clear()
    monkeypatch.setattr(H.platform, "system", lambda: "Darwin")
    assert H.maxrss_mib(3 * 2**20) == 3.0  # macOS reports bytes
    monkeypatch.setattr(H.platform, "system", lambda: "Linux")
    assert H.maxrss_mib(3 * 2**10) == 3.0  # Linux KiB
    monkeypatch.setattr(processes, "PROC", REPO_ROOT / "no-such-proc")
    assert processes._descendants(os.getpid()) == []
    with processes.DescendantPeakRSS(every=0.01) as memory:
        pass
    assert memory.peak_mib == 0.0 and processes.peak_rss_mib() > 0  # the runner then falls back to the finished children


def test_doctor_names_the_class_the_precision_and_a_pinned_emulated_bf16(monkeypatch):
    monkeypatch.setattr(D, "cpu_class", lambda: "avx2")
    monkeypatch.setattr(H, "cpu_class", lambda: "avx2")
    ok = D.check_precision(load_profile("smoke"))
    assert ok.ok and "class avx2" in ok.message and "AugVAE fp32" in ok.message and "BiART fp32" in ok.message
    bad = D.check_precision(load_profile("smoke", **{"biart_train.precision": "bf16"}))
    assert not bad.ok and "biart_train.precision" in bad.fix and "auto" in bad.fix
    monkeypatch.setattr(H, "cpu_class", lambda: "amx")
    assert D.check_precision(load_profile("smoke", **{"biart_train.precision": "bf16"})).ok


def test_doctor_compares_the_profiles_memory_with_the_machines(monkeypatch):
    monkeypatch.setattr(D, "total_memory_bytes", lambda: 8 * 2**30)
    monkeypatch.setattr(D, "available_memory_bytes", lambda: 6 * 2**30)
    small = D.check_memory(load_profile("smoke"))
    assert small.ok and "8.0 GiB" in small.message
    big = D.check_memory(load_profile("paper-dry"))
    assert not big.ok and "18.4 GiB" in big.message and big.fix


def test_the_estimate_times_each_training_stage_and_adds_the_measured_rest(monkeypatch):
    monkeypatch.setattr(E, "MIN_STEPS", 0)
    cfg = load_profile("ci")
    est = E.estimate_run(cfg, steps=1)
    names = [s.name for s in est.stages]
    assert names == ["AugVAE-ML", "AugVAE-SL", "VQ-VAE control", "BiART"]  # ci trains the control too
    assert [s.steps for s in est.stages] == [cfg.augvae_train.ml_steps, cfg.augvae_train.sl_steps,
                                            cfg.augvae_train.baseline_steps, cfg.biart_train.steps]
    assert all(s.step_s > 0 for s in est.stages)
    assert est.total_s == pytest.approx(est.training_s * (1 + E.DEFAULT_REST_SHARE))
    assert "min" in est.describe() and "BiART 30 x" in est.describe()
    monkeypatch.setattr(E, "MIN_STEPS", 10**9)
    assert E.estimate_run(cfg) is None  # too few steps for the trainings to decide the time
    finding = D.check_time(cfg)
    assert finding.ok and "no estimate" in finding.message
