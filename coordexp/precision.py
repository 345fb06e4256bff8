"""Which precision a training step runs in: `trainer.precision` auto | bf16 | fp32, decided once per process.

`auto` is bf16 autocast where the device runs bf16 natively and fp32 everywhere else. On a CPU without native
bf16 (AVX2, or AVX-512 without AVX512_BF16), bf16 is emulated: it still computes correctly, but a step is
several times slower than fp32, so `auto` never picks it there. Evaluation is always fp32 (coordexp.loop).
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import sys
import tempfile

import torch

log = logging.getLogger(__name__)


@functools.cache
def onednn_isa() -> str | None:
    """The instruction set oneDNN will run, as it names it (e.g. 'Intel AVX2', 'Intel AVX-512 with Intel DL Boost
    and bfloat16 support'), or None where it cannot tell.

    Read from oneDNN's own verbose header, which reflects what the backend actually dispatches to: the CPU's
    flags and any limit set in the environment (ONEDNN_MAX_CPU_ISA), which the CPU's flags alone do not show.
    The header goes to the C library's stdout, so it is captured at the file-descriptor level, once per process
    (oneDNN prints it once: where it came earlier, the ISA of the probe's convolution kernel is read instead).
    """
    if not (sys.platform.startswith("linux") and torch.backends.mkldnn.is_available()):
        return None
    try:
        libc = ctypes.CDLL(None)
        sys.stdout.flush()
        saved = os.dup(1)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 1)
            try:
                # a bf16 convolution is handed to oneDNN wherever torch thinks oneDNN can run bf16 at all
                with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                    torch.nn.functional.conv2d(torch.ones(1, 16, 8, 8, dtype=torch.bfloat16),
                                               torch.ones(16, 16, 3, 3, dtype=torch.bfloat16))
            finally:
                libc.fflush(None)
                os.dup2(saved, 1)
                os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
    except (OSError, RuntimeError, AttributeError) as error:  # no libc, no fd 1, a backend that refuses
        log.debug("could not read oneDNN's instruction set: %s", error)
        return None
    lines = text.splitlines()
    for line in lines:
        if ",isa:" in line:
            return line.split(",isa:", 1)[1].strip()
    marker = ",exec,cpu,convolution,"  # then the implementation, e.g. brg_conv_fwd:avx512_core_amx
    kernels = [line.split(marker)[1].split(",")[0].split(":")[-1] for line in lines if marker in line]
    return kernels[0] if kernels else None  # e.g. avx512_core_amx, avx512_core_bf16, avx512_core


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether `device_type` ('cpu', 'cuda', ...) runs bf16 natively in this process."""
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # a torch without the argument: bf16 there means native (compute capability >= 8)
            return torch.cuda.get_device_capability()[0] >= 8
    if device_type == "cpu":
        isa = onednn_isa()
        return isa is not None and any(word in isa for word in ("bfloat16", "bf16", "amx"))  # AVX512_BF16 or AMX
    return False  # MPS and others: not measured here, so not chosen by auto


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision a run's training steps use: `requested` itself, except auto, which is bf16 where the device
    runs it natively and fp32 elsewhere. An explicit bf16 without native support runs (emulated) with a warning."""
    if requested == "fp32":  # nothing to decide: no probe at a plain run's start-up
        return "fp32"
    native = native_bf16(device.type)
    if requested == "auto":
        return "bf16" if native else "fp32"
    if not native:
        _warn_emulated(device.type)
    return str(requested)


@functools.cache
def _warn_emulated(device_type: str) -> None:
    log.warning("trainer.precision=bf16 on a %s without native bf16: it runs emulated, correct but several times "
                "slower than fp32 (trainer.precision=auto picks what this machine runs natively)", device_type)


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform module says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_cpu() -> str:
    """'<model>, ATen AVX512, oneDNN <isa>, bf16 native': what a CPU measurement was made on."""
    isa = onednn_isa() or "with no bf16 path"  # torch sends bf16 to oneDNN only where it expects it to run
    return (f"{cpu_model()}, ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN {isa}, "
            f"bf16 {'native' if native_bf16('cpu') else 'emulated'}")
