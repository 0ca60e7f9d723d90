"""Device check for sharded generation (not a test): per-row random streams and reranked sampling on a CUDA GPU.

Needs no trained models: a random BiART of the paper's layout at a reduced depth, a stand-in decoder and scorer.
1. ``row_sampler.uniforms`` on CUDA equals the CPU values bit for bit (int64 hashing).
2. Generation with 1 prompt per batch and with all prompts in one batch: share of identical image tokens
   (1.0 on the CPU; bf16 kernels chosen per batch size may change a few logits on a GPU).
3. Throughput of ``generate_images`` (tokens/s) for 1024 image tokens, the paper's grid.
Prints one JSON line. Run: PYTHONPATH=$PWD python bench/gpu_check_generate.py [--layers 4]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _generate_stubs import RecordingScorer, StubTokenizer  # noqa: E402

from lverse_core.models.biart import BiART, BiARTArgs  # noqa: E402
from lverse_core.config import load_profile  # noqa: E402
from lverse_core.sampling.generate import generate_images  # noqa: E402
from lverse_core.sampling.row_sampler import row_keys, uniforms  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=16)
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"}
    keys = row_keys(0, "images", range(64), 1, 64)
    out["uniforms_equal_cpu"] = bool(torch.equal(uniforms(keys.to(dev), 5, 8192).cpu(), uniforms(keys, 5, 8192)))

    cfg = load_profile("paper", **{"sampling.n_candidates": 4, "sampling.batch_size": 64})
    torch.manual_seed(0)
    model = BiART(BiARTArgs(n_layer=args.layers, n_head=20, n_embd=1280, text_len=8, image_tokens=1024,
                            text_vocab=40, image_vocab=8192, pad_id=0, dropout=0.0)).to(dev).eval()
    with torch.no_grad():
        model.head_image.weight.mul_(40)  # sharper logits than the 0.02 init, as after training
    tok, caps = StubTokenizer(), [f"prompt number {i}" for i in range(args.prompts)]
    ids = list(range(args.prompts))

    def decode(codes):  # stand-in for AugVAE-SL: brightness follows the codes
        return (codes.float() / 8191 * 2 - 1)[:, None].expand(-1, 3, -1, -1)

    for name, bs in (("one_prompt_per_batch", 4), ("all_in_one_batch", 4 * args.prompts)):
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        codes, _ = generate_images(cfg, model, tok, caps, ids, RecordingScorer(), decode, batch_size=bs)
        if dev == "cuda":
            torch.cuda.synchronize()
        s = time.perf_counter() - t0
        out[name] = {"seconds": round(s, 2), "tokens_per_s": round(4 * args.prompts * 1024 / s)}
        out.setdefault("_codes", []).append(codes)
    a, b = out.pop("_codes")
    out["identical_token_share"] = float((a == b).float().mean())
    out["identical_prompts"] = int((a == b).flatten(1).all(1).sum())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
