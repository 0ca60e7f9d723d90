"""Training: the shared step loop with atomic checkpoints and DDP (``loop``), the AugVAE trainers (``augvae_train``:
ML, the SL finetune, the plain VQ-VAE control), pre-tokenization into code files (``pretokenize``) and the BiART
trainer (``biart_train``). Entry points for torchrun: ``-m lverse_core.training.augvae_train`` and
``-m lverse_core.training.biart_train``.
"""
