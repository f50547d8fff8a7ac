"""torch's CPU thread pools, set for a worker process before torch first computes."""
import torch


def set_threads(n: int) -> int:
    """Intra-op (ATen's OpenMP pool) and inter-op threads; inter-op can be set once, before any parallel work."""
    torch.set_num_threads(n)
    if torch.get_num_interop_threads() != n:
        torch.set_num_interop_threads(n)
    return torch.get_num_threads()
