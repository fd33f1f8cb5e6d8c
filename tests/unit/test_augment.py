"""Augmented training views of product photos: view 0 is what the encoder serves, the others
are reproducible and differ from it."""

from __future__ import annotations

import torch
from imagegen import make_image

from lookalike.encoders import load_encoder
from lookalike.training.augment import Augmentation, view_pixels
from lookalike.training.pair_data import PairTensors


def test_view_zero_is_the_served_image_and_the_others_are_reproducible() -> None:
    preprocessing = load_encoder("efficientnet-lite0").preprocessing
    image = make_image("stripes", 4, size=300)
    aug = Augmentation()
    plain = view_pixels(image, "img-1", 0, preprocessing, aug)
    assert torch.equal(plain, preprocessing.pixels(image))
    views = [view_pixels(image, "img-1", v, preprocessing, aug) for v in range(1, 5)]
    assert all(v.shape == plain.shape and v.dtype == torch.uint8 for v in views)
    assert all(not torch.equal(v, plain) for v in views)
    assert torch.equal(views[0], view_pixels(image, "img-1", 1, preprocessing, aug))
    assert not torch.equal(views[0], view_pixels(image, "img-2", 1, preprocessing, aug))
    assert aug.digest() != Augmentation(views=4).digest()


def test_rows_draw_one_view_of_each_image() -> None:
    # 3 images x 4 views, each view filled with its own number
    vectors = torch.arange(4.0)[None, :, None].expand(3, 4, 2).clone()
    vectors += torch.arange(3.0)[:, None, None] * 10
    data = PairTensors(vectors, torch.tensor([0]), torch.tensor([1]), torch.tensor([[-1]]), views=4)
    torch.manual_seed(0)
    picked = data.rows(torch.tensor([0, 1, 2, 2, 2, 2, 2, 2]))
    assert picked.shape == (8, 2)
    assert picked[:3, 0].div(10).floor().tolist() == [0.0, 1.0, 2.0]  # the right images
    assert len(set(picked[2:, 0].tolist())) > 1  # and several views of image 2
