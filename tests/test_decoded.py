"""Decode-once training images: crops like RandomResizedCrop, reproducible from the RNG state, same pixels."""
import pytest
import torch
import torch.nn.functional as F

from lverse_core.data.decoded import DecodedImages, crop_boxes, random_resized_crop


def test_full_crop_is_the_identity():
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    out = random_resized_crop(x, scale=(1.0, 1.0))
    assert torch.allclose(out, x, atol=1e-5)


def test_crop_matches_cropping_then_bicubic_resize_inside_the_box():
    torch.manual_seed(0)
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    state = torch.get_rng_state()
    boxes = crop_boxes(6, 32)
    torch.set_rng_state(state)
    out = random_resized_crop(x)
    for b, (side, top, left) in enumerate(boxes.tolist()):
        ref = F.interpolate(x[b:b + 1, :, top:top + side, left:left + side], size=(32, 32), mode="bicubic",
                            align_corners=False).clamp(-1, 1)
        # away from the crop's edge (where we read the real neighbours and interpolate replicates the edge)
        assert torch.allclose(out[b, :, 3:-3, 3:-3], ref[0, :, 3:-3, 3:-3], atol=1e-4), (side, top, left)


def test_crop_boxes_stay_inside_and_cover_the_scale_range():
    torch.manual_seed(1)
    boxes = crop_boxes(2000, 64)
    side, top, left = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + side <= 64).all() and (left + side <= 64).all()
    area = (side.float() / 64) ** 2
    assert area.min() >= 0.73 and area.max() <= 1.0  # whole-pixel sides: 55/64 squared is 0.7385 and area.max() > 0.98 and area.min() < 0.77


def test_batches_repeat_from_the_same_rng_state():
    imgs = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    ds = DecodedImages(imgs, train=True)
    torch.manual_seed(5)
    a = ds.batch([1, 2, 3])
    torch.manual_seed(5)
    b = ds.batch([1, 2, 3])
    c = ds.batch([1, 2, 3])
    assert torch.equal(a, b) and not torch.equal(b, c)
    ev = DecodedImages(imgs, train=False).batch([4])
    assert torch.equal(ev[0], ds[4][0]) and torch.allclose((ev[0] + 1) * 127.5, imgs[4].float(), atol=1e-4)


def test_from_dataset_keeps_the_pixels_and_rejects_bad_shapes():
    src = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    items = [(s.float() / 127.5 - 1, 0) for s in src]
    ds = DecodedImages.from_dataset(items, num_workers=0, batch_size=2)
    assert torch.equal(ds.images, src) and len(ds) == 5
    with pytest.raises(ValueError, match="uint8"):
        DecodedImages(src.float())
    with pytest.raises(ValueError, match="square"):
        DecodedImages(torch.zeros(2, 3, 8, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        DecodedImages.from_dataset([])
