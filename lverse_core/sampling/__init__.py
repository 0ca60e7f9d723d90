"""Sampling (paper §3.6): candidates, CLIP reranking and caption truncation (``candidates``), the small CLIP
reranker and the loader of OpenAI weights (``clip_reranker``), per-row random streams that make samples
independent of the batch (``row_sampler``), and sharded, resumable generation for the evaluation notebooks
(``generate``; torchrun entry ``-m lverse_core.sampling.generate``).
"""
