"""lverse_core: the thin package behind the L-Verse reproducibility kit's notebooks.

AugVAE (feature-augmented VQ-VAE, paper §3.3) + BiART (bidirectional auto-regressive transformer, §3.4),
their training, sampling with CLIP reranking (§3.6) and the evaluation of Tables 1-3 and Figure 7.
"""
__version__ = "0.1.0"
