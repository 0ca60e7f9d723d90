"""lverse_core: the thin package behind the L-Verse reproducibility kit's notebooks.

AugVAE (feature-augmented VQ-VAE, paper §3.3) + BiART (bidirectional auto-regressive transformer, §3.4),
their training, sampling with CLIP reranking (§3.6) and the evaluation of Tables 1-3 and Figure 7.

The package is layered by stage; imports only point down the list:

    config, report   typed profiles; the one writer of artefacts under reports/<profile>/
    data/            the embedded shapes data set, loaders of the real formats, the BPE tokenizer
    models/          the EMA quantizer, AugVAE-ML/SL, BiART, top-k/top-p decoding
    training/        the step loop and checkpoints, AugVAE and BiART trainers, pre-tokenization
    sampling/        candidates + CLIP reranking, the CLIP reranker, sharded generation
    evaluation/      attribute judge, FID, caption metrics, human evaluation
    pipeline/        the papermill runner and one glue module per notebook

The names the notebooks read most are importable from here: ``load_profile``, ``AugVAE``, ``BiART``,
``train_augvae``, ``train_biart`` (loaded on first use, so ``import lverse_core`` stays light).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_profile": "lverse_core.config",
    "Config": "lverse_core.config",
    "ConfigError": "lverse_core.config",
    "AugVAE": "lverse_core.models.augvae",
    "BiART": "lverse_core.models.biart",
    "train_augvae": "lverse_core.training.augvae_train",
    "load_augvae": "lverse_core.training.augvae_train",
    "train_biart": "lverse_core.training.biart_train",
    "load_biart": "lverse_core.training.biart_train",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lverse_core' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
