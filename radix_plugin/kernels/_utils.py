"""Small launch helpers shared by the Triton kernels in this package.

Why a module of its own: every launcher needs the same three answers (are we under the Triton
interpreter, may this tensor be handed to a kernel, how many SMs does the device have) and the
answers must be computed the same way everywhere, or a CPU test could silently take a different
code path from the one the GPU takes.
"""

from __future__ import annotations

import functools

import torch
import triton

# Triton decides between compiling and interpreting when `@triton.jit` runs, i.e. when the
# kernel modules are imported. Capturing the flag at the same moment keeps the launchers
# consistent with the kernels they launch.
INTERPRET: bool = bool(triton.knobs.runtime.interpret)


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (Triton block shapes must be powers of two)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def check_launchable(*tensors: torch.Tensor) -> None:
    """Fail with an actionable message instead of Triton's opaque one on CPU tensors.

    Triton has no CPU backend in this build; CPU tensors only work under the interpreter,
    which must be switched on *before* the kernel modules are imported.
    """
    devices = {t.device.type for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(devices)}")
    device = devices.pop()
    if device == "cuda":
        return
    if device == "cpu" and INTERPRET:
        return
    raise RuntimeError(
        f"radix_plugin Triton kernels need CUDA tensors (got {device!r}); on CPU set "
        "TRITON_INTERPRET=1 before radix_plugin.kernels is imported (correctness only)."
    )


@functools.lru_cache(maxsize=8)
def num_sms(device_index: int) -> int:
    """Streaming multiprocessor count, used to size split-KV grids to fill the GPU."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def device_sms(t: torch.Tensor) -> int:
    """SM count of the tensor's device; a nominal H100 count elsewhere.

    The nominal value only matters for the interpreter, where it makes CPU tests exercise the
    same split-KV decisions a Hopper GPU would take.
    """
    if t.device.type == "cuda":
        index = t.device.index if t.device.index is not None else torch.cuda.current_device()
        return num_sms(index)
    return 132


def paged_cache_strides(k_cache: torch.Tensor, v_cache: torch.Tensor) -> tuple[int, ...]:
    """Block, slot and head strides of a [num_blocks, block_size, kv_heads, head_dim] K and V
    cache, in the order every kernel here takes them."""
    return (*k_cache.stride()[:3], *v_cache.stride()[:3])
