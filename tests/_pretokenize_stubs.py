"""A stand-in for AugVAE-SL in pre-tokenization tests (tests/test_augvae.py, tests/test_shards.py)."""
import torch


class Recorder(torch.nn.Module):
    """Stands in for AugVAE-SL in pre-tokenization: remembers the images it is given, returns zero codes."""

    def __init__(self, grid: int):
        super().__init__()
        self.w, self.grid, self.seen = torch.nn.Parameter(torch.zeros(1)), grid, []
        self.quantizer = type("Q", (), {"codebook_size": 16})()

    def encode(self, x):
        self.seen.append(x.clone())
        return torch.zeros(x.shape[0], self.grid, self.grid, dtype=torch.long)
