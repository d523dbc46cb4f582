"""Shared by the benchmark scripts: items per second of a callable, timed after a warm-up."""
import time

import torch


def rate(fn, repeats: int, items_per_call: int, device: torch.device | str = "cpu", warmup: int = 1) -> float:
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return repeats * items_per_call / (time.perf_counter() - t0)
