"""Process-wide settings applied once at start-up, before any tensor is allocated."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

import torch

from coordexp.config import ConfigError, Device

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)


def keep_freed_memory() -> bool:
    """Stop glibc returning large freed buffers to the kernel and mapping them again on the next step.

    Each training step frees and re-allocates the same activation buffers; glibc's default serves
    them with mmap/munmap, which costs page faults and zeroing every step (2-3x slower on the CPU).
    Returns whether the setting took effect (it is a no-op off glibc Linux).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        log.debug("mallopt unavailable; keeping the default allocator")
        return False


def configure_backends(device: torch.device) -> None:
    """CUDA: let cuDNN pick the fastest algorithm for our fixed shapes, and keep fp32 products in true fp32.

    Training speed on the GPU comes from bf16 autocast (trainer.precision); TF32 is off so that evaluation,
    always fp32, is not silently rounded to a 10-bit mantissa (like bf16, it can flip an argmax).
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def make_deterministic() -> None:
    """Use PyTorch's deterministic algorithms everywhere, GPU included (slower: see docs/runs.md)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for reproducible matmuls
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def resolve_device(name: str):
    """`auto` picks cuda when it is available, else cpu; `cuda` without CUDA is a ConfigError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is invalid: CUDA is not available on this machine; "
                          f"valid choices: {', '.join(Device)} (auto falls back to cpu)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(str(name))
