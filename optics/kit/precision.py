"""bfloat16 mixed precision where the hardware runs it natively.

Training and running the attackers' small convolution networks is most of a privacy
report's arithmetic. Where oneDNN has bfloat16 kernels for the CPU (torch's
``_is_mkldnn_bf16_supported``: AVX512 with BF16, or AMX) or on a CUDA GPU with bfloat16,
``torch.autocast`` to bfloat16 runs those convolutions about twice as fast (measured on this
project's 2-core Xeon with AMX; weights and optimiser stay float32). Elsewhere bfloat16 is
emulated and slower, so the ``"auto"`` setting turns it on only where torch reports support.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["BF16_SETTINGS", "native_bf16", "resolve_bf16", "bf16_autocast"]

BF16_SETTINGS = ("auto", "on", "off")


def native_bf16(device) -> bool:
    """Whether ``device`` (a torch device or its name) has native bfloat16 convolutions."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        try:
            return bool(torch.backends.mkldnn.is_available()
                        and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without the query
            return False
    return False


def resolve_bf16(setting: str, device) -> bool:
    """``"on"`` / ``"off"``, or ``"auto"``: on where :func:`native_bf16` says so."""
    if setting not in BF16_SETTINGS:
        raise ValueError(f"bf16 must be one of {', '.join(BF16_SETTINGS)}, got {setting!r}")
    return native_bf16(device) if setting == "auto" else setting == "on"


def bf16_autocast(device, enabled: bool):
    """``torch.autocast`` to bfloat16 on ``device``'s type if ``enabled``, else a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
