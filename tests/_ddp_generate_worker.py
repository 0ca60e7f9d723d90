"""Run by tests/test_generate.py under torchrun (2 CPU processes, gloo): captions and images of the tiny BiART."""
import sys

import torch

from _generate_stubs import RecordingScorer, StubTokenizer, inputs, stub_decode, tiny_biart, tiny_cfg
from lverse_core.sampling.generate import generate_captions, generate_images
from lverse_core.training.loop import cleanup_distributed, setup_distributed

out = sys.argv[1]
cfg = tiny_cfg(**{"sampling.n_repeats": 2})
dist = setup_distributed("cpu")
model, tok = tiny_biart(), StubTokenizer()
codes, image_ids, captions, images = inputs()
caps = generate_captions(cfg, model, tok, codes, image_ids, RecordingScorer(), dist, images=images, batch_size=4)
img_codes, recs = generate_images(cfg, model, tok, captions, image_ids, RecordingScorer(), stub_decode, dist,
                                  batch_size=6)
if dist.is_main:
    torch.save({"captions": caps, "codes": img_codes, "records": recs}, out)
cleanup_distributed()
