"""BiART model: token layout, segment ids, loss masking, KV cache, sampling, parameter count (paper §3.4-3.6)."""
import math

import pytest
import torch

from lverse_core.models.biart import GEN, I2T, REF, T2I, BiART, BiARTArgs
from lverse_core.config import load_profile

L, N, VT, VI, PAD = 6, 16, 40, 32, 0


def tiny(dropout=0.0, **kw) -> BiART:
    torch.manual_seed(0)
    args = dict(n_layer=2, n_head=2, n_embd=32, text_len=L, image_tokens=N, text_vocab=VT, image_vocab=VI,
                pad_id=PAD, dropout=dropout)
    args.update(kw)
    return BiART(BiARTArgs(**args)).eval()


def batch(B=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(1, VT, (B, L), generator=g)
    text[0, 4:] = PAD  # a padded caption
    image = torch.randint(0, VI, (B, N), generator=g)
    return text, image


def test_token_layout_and_segments_t2i():
    m = tiny()
    text, image = batch()
    seq = m.build_sequence(text, image, T2I)
    assert seq.shape == (3, L + N + 2)
    assert (seq[:, 0] == m.soc_id).all() and (seq[:, L + 1] == m.soi_id).all()
    assert torch.equal(seq[:, 1:L + 1], text) and torch.equal(seq[:, L + 2:] - VT, image)
    lay = m.layout(T2I)
    assert lay["seg"].tolist() == [REF] * (L + 1) + [GEN] * (N + 1)  # text is the reference, image the target
    assert lay["pos"].tolist() == list(range(L + 1)) + list(range(N + 1))
    # input position p predicts token p+1: text targets t_1..t_L, image targets i_1..i_N
    assert torch.equal(seq[:, lay["text_out"] + 1], text) and torch.equal(seq[:, lay["image_out"] + 1] - VT, image)


def test_token_layout_and_segments_i2t():
    m = tiny()
    text, image = batch()
    seq = m.build_sequence(text, image, I2T)
    assert (seq[:, 0] == m.soi_id).all() and (seq[:, N + 1] == m.soc_id).all()
    lay = m.layout(I2T)
    assert lay["seg"].tolist() == [REF] * (N + 1) + [GEN] * (L + 1)  # image is the reference, text the target
    assert torch.equal(seq[:, lay["text_out"] + 1], text) and torch.equal(seq[:, lay["image_out"] + 1] - VT, image)
    assert m._is_text(I2T, 0, L + N + 1, None).tolist() == [False] * (N + 1) + [True] * L


def test_segment_embedding_changes_the_output():
    m = tiny()
    text, image = batch()
    a = m.logits(text, image, T2I)[1]
    with torch.no_grad():
        m.seg_emb.weight[GEN] += 1.0
    assert not torch.allclose(a, m.logits(text, image, T2I)[1])


def test_padding_is_excluded_from_the_loss():
    m = tiny()
    text, image = batch()
    base = m(text, image, I2T)
    # the targets after the caption's end are [PAD]: changing the logits there must not change the loss
    text_logits, _ = m.logits(text, image, I2T)
    keep = text != PAD
    manual = torch.nn.functional.cross_entropy(text_logits[keep], text[keep])
    assert torch.allclose(base["gen"], manual, atol=1e-6)
    text2 = text.clone()
    text2[0, 5] = 7  # a real token where there was padding changes the loss
    assert not torch.allclose(m(text2, image, I2T)["gen"], base["gen"])


@pytest.mark.parametrize("direction", [T2I, I2T])
def test_kv_cache_logits_equal_full_recompute(direction):
    m = tiny()
    text, image = batch()
    seq = m.build_sequence(text, image, direction)[:, :-1]
    lay = m.layout(direction)
    T = seq.size(1)
    with torch.no_grad():
        full = m._body(m._embed(seq, lay["pos"][:T], lay["seg"][:T], m._is_text(direction, 0, T, None)))
        cache = m._new_cache(3, T, seq.device, torch.float32)
        P = 5  # a prefill of 5 tokens, then one token at a time
        steps = [m._body(m._embed(seq[:, :P], lay["pos"][:P], lay["seg"][:P], m._is_text(direction, 0, P, None)),
                         cache)]
        for t in range(P, T):
            s = slice(t, t + 1)
            steps.append(m._body(m._embed(seq[:, s], lay["pos"][s], lay["seg"][s],
                                          m._is_text(direction, t, 1, None)), cache))
    cached = torch.cat(steps, 1)
    assert torch.allclose(cached, full, atol=1e-5), (cached - full).abs().max()


def test_generate_uses_the_cache_and_matches_recompute():
    m = tiny()
    text, image = batch()
    a = m.generate_image(text, generator=torch.Generator().manual_seed(3))
    b = m.generate_image(text, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert a.shape == (3, N) and torch.equal(a, b) and a.max() < VI
    assert m.generate_image(text, as_grid=True).shape == (3, 4, 4)
    t1 = m.generate_text(image, 5, generator=torch.Generator().manual_seed(3), top_k=10)
    t2 = m.generate_text(image.view(3, 4, 4), 5, generator=torch.Generator().manual_seed(3), top_k=10,
                         use_cache=False)
    assert t1.shape == (3, 5) and torch.equal(t1, t2) and t1.max() < VT


def test_sampling_is_reproducible_with_a_seed():
    m = tiny()
    text, _ = batch()
    runs = [m.generate_image(text, generator=torch.Generator().manual_seed(s), top_p=0.9) for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_bad_inputs_give_clear_errors():
    m = tiny()
    with pytest.raises(ValueError, match="text_len"):
        m.generate_image(torch.zeros(2, L + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="expects 16"):
        m.generate_text(torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="n_tokens"):
        m.generate_text(torch.zeros(2, N, dtype=torch.long), L + 1)


@pytest.mark.parametrize("direction", [T2I, I2T])
def test_overfitting_one_batch_drives_the_loss_down(direction):
    m = tiny().train()
    text, image = batch(B=4)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        parts = m(text, image, direction)
        loss = parts["ref"] + parts["gen"]
        first = first if first is not None else (parts["ref"].item(), parts["gen"].item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts["ref"].item() < 0.3 * first[0] and parts["gen"].item() < 0.3 * first[1]


def test_weight_decay_groups_follow_mingpt():
    m = tiny()
    decay, no_decay = m.param_groups(0.1)
    names = {id(p): n for n, p in m.named_parameters()}
    assert all(names[id(p)].endswith("weight") and "ln" not in names[id(p)] for p in decay["params"])
    assert any(names[id(p)] == "tok_emb.weight" for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))


def test_paper_config_parameter_count():
    cfg = load_profile("paper")
    with torch.device("meta"):
        m = BiART.from_config(cfg, text_vocab_size=49408, pad_id=0)
    assert m.args.text_len == 64 and m.args.image_tokens == 1024 and m.args.image_vocab == 8192
    d, layers = 1280, 24
    assert m.num_params("blocks") == layers * (12 * d * d + 13 * d) + 2 * d  # GPT-2 block formula + final LN
    assert 470e6 < m.num_params("blocks") < 475e6  # the design brief's count: 472M block parameters
    assert m.num_params() == m.num_params("blocks") + m.num_params("embeddings") + m.num_params("heads")
    assert math.isclose(m.num_params("heads"), d * (49408 + 8192))


def test_cpu_attention_under_bf16_autocast_runs_in_fp32():
    from lverse_core.models.biart import _causal_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 89, 16, generator=g).to(torch.bfloat16) for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = _causal_attention(q, k, v, 0.0)
    want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, want.to(torch.bfloat16))


# -- ablation switches (claims notebook 07) ----------------------------------------------------------------------

def test_without_the_segment_embedding_the_module_is_absent_and_segments_do_not_matter():
    m = tiny(segment_embedding=False)
    assert m.seg_emb is None and not any("seg_emb" in n for n, _ in m.named_parameters())
    text, image = batch()
    seq = m.build_sequence(text, image, T2I)[:, :-1]
    lay, T = m.layout(T2I), seq.size(1)
    is_text = m._is_text(T2I, 0, T, None)
    with torch.no_grad():
        a = m._embed(seq, lay["pos"][:T], lay["seg"][:T], is_text)
        b = m._embed(seq, lay["pos"][:T], 1 - lay["seg"][:T], is_text)  # every segment id swapped
    assert torch.equal(a, b)
    with_seg = tiny()
    with torch.no_grad():
        assert not torch.allclose(with_seg._embed(seq, lay["pos"][:T], lay["seg"][:T], is_text),
                                  with_seg._embed(seq, lay["pos"][:T], 1 - lay["seg"][:T], is_text))
    assert with_seg.num_params() - m.num_params() == 2 * 32


def test_shared_positions_use_one_table_over_the_sequence():
    shared, per = tiny(positions="shared"), tiny()
    assert shared.pos_emb.shape == (L + N + 2, 32) and not hasattr(shared, "text_pos")
    assert shared.layout(T2I)["pos"].tolist() == list(range(L + N + 2))
    # a caption token's position depends on the direction with one table, not with per-modality tables
    t2i, i2t = shared.layout(T2I)["pos"], shared.layout(I2T)["pos"]
    assert t2i[1] != i2t[N + 2] and per.layout(T2I)["pos"][1] == per.layout(I2T)["pos"][N + 2]
    text, image = batch()
    def g():
        return torch.Generator().manual_seed(0)

    # the KV-cache path samples what full recompute samples under one position table too (positions of the cache)
    assert torch.equal(shared.generate_image(text, generator=g()),
                       shared.generate_image(text, generator=g(), use_cache=False))
    assert torch.equal(shared.generate_text(image, generator=g()),
                       shared.generate_text(image, generator=g(), use_cache=False))
    with pytest.raises(ValueError, match="per_modality.*shared"):
        tiny(positions="absolute")


def test_architecture_records_name_the_switches_only_when_not_default():
    assert "segment_embedding" not in tiny().args.arch() and "positions" not in tiny().args.arch()
    args = tiny(segment_embedding=False, positions="shared").args.arch()
    assert args["segment_embedding"] is False and args["positions"] == "shared"
    old = tiny().args.arch()  # a checkpoint written before the switches: still builds the default model
    assert BiART(BiARTArgs(**old, dropout=0.0)).args == tiny().args
    cfg = load_profile("ci", **{"biart.segment_embedding": False, "biart.positions": "shared"})
    built = BiART.args_from_config(cfg, VT, PAD)
    assert built.segment_embedding is False and built.positions == "shared"
    with pytest.raises(ValueError, match="biart.positions"):
        load_profile("ci", **{"biart.positions": "absolute"})
