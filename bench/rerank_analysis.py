"""How much do the text->image candidates hold, and how much of it does each reranking rule keep?

``python bench/rerank_analysis.py [--profile smoke] [--candidates 32] [--temperature T] [--out FILE]``

Reads a finished run of the profile (notebooks 01-02: AugVAE-SL, BiART, the CLIP reranker; the judge of notebook
03/05 is trained if missing), draws ``--candidates`` images for each Table 3 prompt (``generate.t2i_prompts``) with
``candidates.text_to_image``, and judges *every* candidate with the kit's attribute judge. Then, for the first k = 8,
16, ... candidates of each prompt:

- one sample right: the share of single candidates judged right;
- oracle@k: a right image is among the first k (what a perfect reranker would keep);
- picked@k by rule: the share of prompts whose kept image is right, for the clip-score alone (paper §3.6), BiART's
  log p(caption | candidate codes) alone, and ``candidates.rerank_scores`` with weights 1 and 3 (both z-scored);
  each also by the number of objects the prompt names.

This is an analysis of one run's models, not a timing: it needs embedded data (the judge needs ground truth).
Measured results are recorded in bench/README.md ("Images: reranking by BiART's own likelihood").
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

RULES = {"clip-score (paper)": None, "BiART log-likelihood": "ll", "z(clip) + 1 z(ll)": 1.0, "z(clip) + 3 z(ll)": 3.0}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--candidates", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=None, help="default: the profile's sampling.temperature")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.candidates < 1:
        sys.exit("--candidates must be >= 1")

    from lverse_core.config import load_run_config
    from lverse_core.data.shapes import parse_caption
    from lverse_core.evaluation.judge import ensure_judge, image_matches, to_uint8, to_unit_range
    from lverse_core.pipeline.biart_run import clip_score_fns
    from lverse_core.report import cpu_model
    from lverse_core.sampling.candidates import caption_log_likelihood, rerank, rerank_scores, text_to_image
    from lverse_core.sampling.generate import load_models, t2i_prompts

    cfg = load_run_config(args.profile, {})
    if cfg.data.source != "shapes":
        sys.exit(f"profile {cfg.profile} does not use the embedded data: the judge needs ground truth")
    try:
        m = load_models(cfg, "cpu")
    except FileNotFoundError as e:
        sys.exit(f"{e}\n(run `make reproduce PROFILE={cfg.profile}` first: this analysis reads its models)")
    model, tok, decode = m["model"].eval(), m["tokenizer"], m["decode"]
    judge = ensure_judge(cfg)
    prompts = t2i_prompts(cfg)
    caps, n, g = prompts["captions"], args.candidates, cfg.image_grid
    n_obj = torch.tensor([len(parse_caption(c)) for c in caps])
    T = cfg.sampling.temperature if args.temperature is None else args.temperature
    score, _ = clip_score_fns(m["scorer"], decode, g)
    text = tok.encode(caps)

    t0 = time.perf_counter()
    out = text_to_image(model, text, caps, n_candidates=n, score_fn=score, seed=args.seed,
                        batch_size=cfg.sampling.batch_size, temperature=T, top_k=cfg.sampling.top_k,
                        top_p=cfg.sampling.top_p, keep_candidates=True)
    sample_s = time.perf_counter() - t0
    cands = out["candidates"][:, 0].reshape(len(caps) * n, -1)  # (P*n, N), a prompt's candidates adjacent
    clip = out["scores"][:, 0]  # (P, n)
    rows = text.repeat_interleave(n, 0)
    ll = torch.cat([caption_log_likelihood(model, cands[i:i + 256], rows[i:i + 256])
                    for i in range(0, len(cands), 256)]).view(len(caps), n)
    right = []
    for i in range(0, len(cands), 256):
        seen = judge.judge_image(to_unit_range(to_uint8(decode(cands[i:i + 256].view(-1, g, g)).cpu())))
        right += [image_matches(s, caps[(i + j) // n]) for j, s in enumerate(seen)]
    ok = torch.tensor(right).view(len(caps), n)

    def share(v: torch.Tensor) -> dict:
        d = {"all": round(float(v.float().mean()), 4)}
        d.update({f"{k} objects": round(float(v[n_obj == k].float().mean()), 4) for k in sorted(set(n_obj.tolist()))})
        return d

    result = {"profile": cfg.profile, "seed": cfg.seed, "prompts": len(caps), "candidates": n, "temperature": T,
              "cpu": cpu_model(), "threads": torch.get_num_threads(), "sample_s": round(sample_s, 1),
              "one sample right": share(ok.float().mean(1)), "by k": {}}
    ks = sorted({k for k in (1, 8, 16, 32, 64) if k <= n} | {n})
    for k in ks:
        entry = {"oracle": share(ok[:, :k].any(1))}
        for name, rule in RULES.items():
            if rule is None:
                ranking = clip[:, :k]
            elif rule == "ll":
                ranking = ll[:, :k]
            else:
                ranking = rerank_scores(clip[:, :k], ll[:, :k], rule)
            entry[name] = share(ok[torch.arange(len(caps)), rerank(ranking)])
        result["by k"][k] = entry

    print(f"{cfg.profile} run (seed {cfg.seed}), {len(caps)} Table 3 prompts, {n} candidates at T = {T}; "
          f"{result['cpu']}, {result['threads']} threads; sampling {sample_s:.0f} s")
    print(f"one sample right: {result['one sample right']['all']:.1%}")
    head = ["k", "oracle"] + list(RULES)
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for k, e in result["by k"].items():
        print("| " + " | ".join([str(k)] + [f"{e[h]['all']:.1%}" for h in head[1:]]) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
