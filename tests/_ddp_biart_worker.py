"""Run by tests/test_biart_train.py under torchrun (2 CPU processes, gloo): train a few BiART steps with DDP."""
import sys

from lverse_core.training.biart_train import synthetic_pairs, train_biart
from lverse_core.config import load_profile

runs = sys.argv[1]
batch = int(sys.argv[2])  # per process: 2 processes x 4 = one process x 8
cfg = load_profile("ci", runs_dir=runs, **{"data.image_size": 32, "augvae.codebook_size": 24, "biart.n_layer": 2,
                                         "biart.n_head": 2, "biart.n_embd": 32, "biart.text_len": 8,
                                         "biart.dropout": 0.0, "biart_train.batch_size": batch, "biart_train.steps": 4,
                                         "biart_train.warmup_steps": 1, "biart_train.ckpt_every": 4,
                                         "biart_train.log_every": 1, "biart_train.lr": 3e-3})
data = synthetic_pairs(16, 2, 8, 30, cfg.image_tokens, 24, seed=0)
# pad_id -100 never occurs, so every rank averages its NLL over the same number of tokens and the DDP mean of the
# two half-batch gradients equals the one-process gradient of the whole batch
train_biart(cfg, data, text_vocab_size=30, pad_id=-100)
