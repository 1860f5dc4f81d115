"""Device helpers the benchmarks share: the matmul roofline, CUDA synchronisation, peak memory.

Run the benchmarks as scripts (``python benchmarks/score_bench.py``): this folder is then on
``sys.path`` and they import this module by name.
"""

from __future__ import annotations

import time

import torch


def matmul_rate(size: int = 1024, repeats: int = 20, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a plain square matrix product on the path's device and dtype (the roofline the
    model's matmuls are measured against); 4096 on a GPU, where 1024 is launch-bound."""
    size = 4096 if device.startswith("cuda") else size
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    synchronize(device)
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - began)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_line() -> str:
    """Peak GPU memory of the run (``peak_gpu_memory_gib X``), or an empty string on CPU."""
    if not torch.cuda.is_available():
        return ""
    return f"peak_gpu_memory_gib {torch.cuda.max_memory_allocated() / 2**30:.2f}"
