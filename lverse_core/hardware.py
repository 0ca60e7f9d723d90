"""What this machine computes with, and the precision a run uses when its profile says ``auto``.

A CPU falls in one of five classes, as torch's kernels see it (not as the chip's datasheet does):

| class         | what torch runs                                   | ``precision: auto`` | ``channels_last: auto`` |
|---------------|---------------------------------------------------|---------------------|-------------------------|
| ``amx``       | AVX-512 kernels, oneDNN bf16 matmuls on AMX tiles | bf16                | off (NCHW)              |
| ``avx512-bf16`` | AVX-512 kernels with native bf16 dot products  | bf16                | off (NCHW)              |
| ``avx512``    | AVX-512 kernels, bf16 converted in software       | fp32                | on                      |
| ``avx2``      | AVX2 kernels, bf16 emulated                       | fp32                | on                      |
| ``other``     | no x86 vector kernels torch knows (Arm, ...)      | fp32                | on                      |

Why: bf16 autocast is 1.3-2x faster than fp32 per training step where bf16 is native (measured on an Intel Xeon with
AMX and an AMD EPYC Zen 4 with AVX512-BF16) and 16-19x slower where it is emulated (an AMD EPYC with AVX2 only; AugVAE-ML
8.9 s vs 0.46 s per smoke step). NHWC convolutions were faster in fp32 on the CPU and slower in bf16 on AMX
(docs/design-notes.md). An explicit ``fp32`` / ``bf16`` / ``true`` / ``false`` in a profile always wins.

``ATEN_CPU_CAPABILITY=avx2`` (torch) or ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN) make an AVX-512 machine run AVX2 kernels;
the class follows them, so the choice is the one an AVX2-only CPU would get. Detection needs no ``/proc``: torch's
own CPU probe (cpuinfo) answers on Linux and macOS alike; ``/proc/cpuinfo`` or ``sysctl`` only add the model name.
"""
from __future__ import annotations

import os
import platform
import subprocess
import warnings
from functools import lru_cache
from pathlib import Path

CPU_CLASSES = ("amx", "avx512-bf16", "avx512", "avx2", "other")
NATIVE_BF16_CLASSES = ("amx", "avx512-bf16")
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA) below the first ISA with native bf16 dot products
_ONEDNN_BELOW_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")
_ONEDNN_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")
# CPU features whose presence changes which kernels torch runs (and so the last digits of results)
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def _read_proc(name: str) -> str:
    """``/proc/<name>``, or "" where there is none (macOS, Windows, a sandbox without /proc)."""
    try:
        return Path("/proc", name).read_text()
    except OSError:
        return ""


def _sysctl(name: str) -> str:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name: ``/proc/cpuinfo`` on Linux, ``sysctl machdep.cpu.brand_string`` on macOS."""
    for line in _read_proc("cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return _sysctl("machdep.cpu.brand_string") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> set[str]:
    """The kernel-relevant ISA flags (``CPU_FLAGS``) this CPU has, from torch's cpuinfo probe, else from the OS."""
    import torch

    probe = {"avx2": "_is_avx2_supported", "avx512f": "_is_avx512_supported", "avx512_vnni": "_is_vnni_supported",
             "avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported"}
    flags: set[str] = set()
    for flag, fn in probe.items():
        f = getattr(torch.cpu, fn, None)
        if f is not None and f():
            flags.add(flag)
    listed = set()
    for line in _read_proc("cpuinfo").splitlines():
        if line.startswith("flags"):
            listed = set(line.split(":", 1)[1].split())
            break
    if not listed:  # macOS on Intel: the same names in upper case, split over two sysctl keys
        listed = {w.lower().replace(".", "_") for k in ("machdep.cpu.features", "machdep.cpu.leaf7_features")
                  for w in _sysctl(k).split()}
    flags |= {f for f in CPU_FLAGS if f in listed}
    if "amx_tile" in flags and "amx_bf16" not in listed and "amx_bf16" not in flags:
        flags.add("amx_bf16")  # torch probes the tiles; every AMX generation so far has the bf16 unit
    return flags


def torch_capability() -> str:
    """torch's kernel level for this process (``AVX512``, ``AVX2``, ``DEFAULT``, ...), ATEN_CPU_CAPABILITY included."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def _onednn_cap() -> str:
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()


def classify(capability: str, flags: set[str], onednn_cap: str = "") -> str:
    """The CPU class from torch's kernel level, the ISA flags and a oneDNN ISA cap (see the module's table)."""
    if capability.upper() not in ("AVX512", "AMX"):
        return "avx2" if capability.upper().startswith("AVX2") else "other"
    if onednn_cap in _ONEDNN_BELOW_AVX512:
        return "avx2"
    native = onednn_cap not in _ONEDNN_BELOW_BF16
    if native and "amx_bf16" in flags:
        return "amx"
    if native and "avx512_bf16" in flags:
        return "avx512-bf16"
    return "avx512"


def cpu_class() -> str:
    """This machine's CPU class (``CPU_CLASSES``), as torch's and oneDNN's kernels see it in this process."""
    return classify(torch_capability(), cpu_flags(), _onednn_cap())


def cpu_has_native_bf16() -> bool:
    """True on the CPU classes where bf16 autocast runs native kernels (AMX, AVX512-BF16) and is faster than fp32."""
    return cpu_class() in NATIVE_BF16_CLASSES


def _device_type(device) -> str:
    return device if isinstance(device, str) else device.type


def resolve_precision(requested: str, device, *, what: str = "precision") -> str:
    """``fp32`` / ``bf16`` / ``fp16`` for a run on ``device``: ``auto`` is bf16 on a GPU and on a CPU with native bf16,
    fp32 on any other CPU; an explicit value is kept (fp16 needs a GPU; bf16 on a CPU without native bf16 warns)."""
    kind = _device_type(device)
    if requested == "auto":
        return "bf16" if kind == "cuda" or cpu_has_native_bf16() else "fp32"
    if requested == "fp16" and kind != "cuda":
        raise ValueError(f"{what} fp16 needs a GPU; use auto, fp32 or bf16 on the CPU")
    if requested == "bf16" and kind == "cpu" and not cpu_has_native_bf16():
        warnings.warn(f"{what} is bf16 but this CPU ({cpu_class()}) has no native bf16: bf16 is emulated there, "
                      f"~16x slower than fp32; set it to auto (or fp32) for this machine", stacklevel=2)
    return requested


def resolve_channels_last(requested: str, device, precision: str) -> bool:
    """NHWC convolutions: ``auto`` is on, except for bf16 on a CPU (NCHW measured faster there); true/false win."""
    if requested in ("true", "false"):
        return requested == "true"
    return not (_device_type(device) == "cpu" and precision == "bf16")


def precision_plan(cfg) -> dict:
    """What a run of ``cfg`` computes in on this machine: device, CPU class, each trainer's precision, AugVAE's
    memory format. Printed when a run starts, recorded in its manifest, shown beside its headline numbers."""
    device = cfg.resolved_device()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the trainers warn when they run; the plan only reports
        plan = {"device": device, "cpu_class": cpu_class(), "cpu_model": cpu_model()}
        for key, section in (("augvae", cfg.augvae_train), ("biart", cfg.biart_train)):
            try:
                plan[key] = resolve_precision(section.precision, device)
            except ValueError:
                plan[key] = f"{section.precision} (needs a GPU)"
    plan["augvae_memory_format"] = ("NHWC" if resolve_channels_last(cfg.augvae_train.channels_last, device,
                                                                    plan["augvae"]) else "NCHW")
    return plan


def describe_plan(plan: dict) -> str:
    """One line: ``AugVAE fp32 (NHWC), BiART fp32 on cpu: AMD EPYC (avx2)``."""
    g = lambda key: plan.get(key, "?")  # noqa: E731  (a hand-edited manifest may lack a key)
    where = f"cpu: {g('cpu_model')} ({g('cpu_class')})" if g("device") == "cpu" else g("device")
    return f"AugVAE {g('augvae')} ({g('augvae_memory_format')}), BiART {g('biart')} on {where}"


def total_memory_bytes() -> int:
    """Physical memory of this machine (POSIX sysconf; ``sysctl hw.memsize`` as a fallback), 0 if unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        return int(_sysctl("hw.memsize") or 0)
    except ValueError:
        return 0


def available_memory_bytes() -> int:
    """Memory a new process can use now: ``MemAvailable`` on Linux, else the total (macOS has no cheap equivalent)."""
    for line in _read_proc("meminfo").splitlines():
        if line.startswith("MemAvailable:"):
            try:
                return int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                break
    return total_memory_bytes()


def maxrss_mib(ru_maxrss: int) -> float:
    """``resource.getrusage(...).ru_maxrss`` in MiB: Linux reports KiB, macOS bytes."""
    return round(ru_maxrss / (1024 * 1024 if platform.system() == "Darwin" else 1024), 1)


def describe() -> dict:
    """What decides the CPU arithmetic of a run: model, class, the ISA flags torch uses, kernel level, threads."""
    import torch

    return {"model": cpu_model(), "class": cpu_class(), "cores": os.cpu_count(),
            "isa_flags": [f for f in CPU_FLAGS if f in cpu_flags()], "torch_cpu_capability": torch_capability(),
            "onednn_max_cpu_isa": _onednn_cap() or None, "torch_threads": torch.get_num_threads()}


__all__ = ["CPU_CLASSES", "CPU_FLAGS", "NATIVE_BF16_CLASSES", "available_memory_bytes", "classify", "cpu_class",
           "cpu_flags", "cpu_has_native_bf16", "cpu_model", "describe", "describe_plan", "precision_plan", "maxrss_mib", "resolve_channels_last",
           "resolve_precision", "torch_capability", "total_memory_bytes"]
