"""Models: the two stages of L-Verse and their parts.

Stage 1, the image tokenizer: ``quantize`` (the EMA codebook all AugVAE levels share), ``augvae`` (AugVAE-ML/SL,
paper §3.3), ``perceptual`` (the optional LPIPS term). Stage 2: ``biart`` (the GPT with [REF]/[GEN] segment
embeddings, §3.4) and ``decoding`` (top-k / top-p token sampling its generate methods use). Nothing here imports
training, sampling, evaluation or the notebooks' glue.
"""
