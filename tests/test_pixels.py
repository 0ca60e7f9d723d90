"""One conversion per pair of pixel ranges (uint8 [0, 255], signed [-1, 1], unit [0, 1]), named by its ranges."""
import pytest
import torch

from lverse_core.data import pixels as P


def test_uint8_survives_the_round_trip_through_signed_exactly():
    u8 = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    signed = P.signed_from_uint8(u8)
    assert signed.dtype == torch.float32 and float(signed.min()) == -1.0 and float(signed.max()) == 1.0
    assert torch.equal(P.uint8_from_signed(signed), u8)


def test_uint8_from_signed_clamps_rounds_and_passes_uint8_through():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0])
    assert P.uint8_from_signed(x).tolist() == [0, 0, 128, 255, 255, 255]  # 127.5 rounds to even: 128
    u8 = torch.tensor([0, 7, 255], dtype=torch.uint8)
    assert P.uint8_from_signed(u8) is u8  # uint8 is never mistaken for [-1, 1] and clamped to 0/1
    with pytest.raises(TypeError, match="uint8 in \\[0, 255\\] or float in \\[-1, 1\\]"):
        P.uint8_from_signed(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="dtype"):
        P.signed_from_uint8(torch.zeros(3, dtype=torch.int32))


def test_unit_from_signed_maps_onto_zero_one():
    assert P.unit_from_signed(torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0])).tolist() == [0.0, 0.0, 0.5, 0.75, 1.0]


def test_the_older_names_are_the_same_functions():
    from lverse_core.data import decoded
    from lverse_core.evaluation import judge

    assert decoded.to_uint8 is judge.to_uint8 is P.uint8_from_signed
    assert decoded.from_uint8 is judge.to_unit_range is P.signed_from_uint8


def test_checkpoint_paths_come_from_one_table():
    from lverse_core import load_profile
    from lverse_core.training import augvae_train, checkpoint_paths as C

    cfg = load_profile("ci")
    assert C.checkpoint_path(cfg, "biart") == cfg.runs_root / "biart.pt"
    assert augvae_train.checkpoint_path(cfg, "baseline") == cfg.runs_root / "vqvae_baseline.pt"
    assert {v: f for v, (f, _, _) in augvae_train.VARIANTS.items()} == {
        v: C.CHECKPOINT_FILES[v] for v in ("ml", "sl", "baseline")}
    with pytest.raises(ValueError, match="unknown model 'xl'.*ml, sl, baseline, biart"):
        C.checkpoint_path(cfg, "xl")
