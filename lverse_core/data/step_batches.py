"""AugVAE's per-step decoding (``augvae_train.decode: per_step``, ImageNet): every training step's batch decoded and
cropped in ``data.num_workers`` DataLoader worker processes, ahead of the step that needs it.

One loader item is one optimizer step's batch for this process: the images ``StepSampler`` gives this rank at that
step, each through the data set's own item (for the ImageFolder: the kit's ``load_image`` with its mode conversions,
then the official random resized crop, scale 0.75-1, square). The crop's random numbers are not a worker's: each
image draws from torch's generator seeded by (seed, step, position in the global batch), inside
``torch.random.fork_rng``, so the calling process's own stream is untouched. The batches are therefore a function of
(seed, step) alone: the same with 0 or 8 workers, after a resume (the data position is the step), and for one
process with batch B or two with B/2 (positions are global). The DataLoader's base seed is drawn from a private
generator, not the global one, so building the loader does not move the model's random stream either. One loader
pass covers every remaining step of the run, so its workers live as long as the run (what ``persistent_workers``
gives across epochs); batches are pinned for the copy to a GPU.

Bad input: an item that raises ``BadInputError`` follows ``data.bad_input``: ``error`` stops the run with the file
named (re-raised in the training process); ``skip`` takes the next image of the listing instead (as the ImageFolder
data set does) and sends the message back with the batch, so the training process reports it (a worker's own log
lines would not reach a notebook).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lverse_core.data.records import BadInputError

_SALT = 0x5EED_C209  # keeps the crop streams apart from any other stream keyed by the same (seed, step, position)


def crop_seed(seed: int, step: int, position: int) -> int:
    """The torch seed of the crop of global-batch ``position`` at ``step``: a 63-bit integer."""
    words = np.random.SeedSequence([_SALT, seed, step, position]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


class StepBatches(Dataset):
    """Item ``i``: ``(step, images (b, 3, S, S), skipped messages)`` for step ``start + i`` of ``sampler``'s rank.

    ``images`` yields ``(image, label)`` items whose random transform (if any) draws from torch's global generator,
    and may offer ``load(i)``, the item without its own bad-input handling (``ImageFolderDataset``), so that the
    policy is applied here and a skip is reported back.
    """

    def __init__(self, images: Dataset, sampler, start: int, total: int, seed: int, bad_input: str = "error"):
        if bad_input not in ("error", "skip"):
            raise ValueError(f"data.bad_input must be error or skip, got {bad_input!r}")
        self.images, self.sampler, self.start, self.total = images, sampler, start, total
        self.seed, self.bad_input = seed, bad_input

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __getitem__(self, i: int):
        step = self.start + i
        s = self.sampler
        out, skipped = [], []
        for k, idx in enumerate(s.indices(step)):
            out.append(self._image(idx, crop_seed(self.seed, step, s.rank + k * s.world), skipped))
        return step, torch.stack(out), skipped

    def _image(self, idx: int, seed: int, skipped: list[str]) -> torch.Tensor:
        load = getattr(self.images, "load", self.images.__getitem__)
        n = len(self.images)
        for k in range(n):
            j = (idx + k) % n
            with torch.random.fork_rng(devices=[]):  # the CPU generator only; restored on leaving
                torch.default_generator.manual_seed(seed)  # not torch.manual_seed: it would reseed the GPUs too
                try:
                    return load(j)[0]
                except BadInputError as e:
                    if self.bad_input == "error":
                        raise BadInputError(f"{e}; fix the file or set data.bad_input = skip") from None
                    skipped.append(str(e))
        raise BadInputError(f"every one of the {n} training images is bad (first: {skipped[:1]})")


def step_batches(images: Dataset, sampler, start: int, total: int, *, seed: int, num_workers: int = 0,
                 bad_input: str = "error", pin_memory: bool = False) -> Iterator[tuple[int, torch.Tensor, list[str]]]:
    """Yield ``(step, images, skipped)`` for steps ``start``..``total - 1`` in order, decoded by ``num_workers``
    DataLoader workers (0: in this process). Close the generator to stop the workers early."""
    loader = DataLoader(StepBatches(images, sampler, start, total, seed, bad_input), batch_size=None,
                        num_workers=num_workers, pin_memory=pin_memory, prefetch_factor=2 if num_workers else None,
                        generator=torch.Generator().manual_seed(seed))  # base seed: not from the global generator
    yield from loader
