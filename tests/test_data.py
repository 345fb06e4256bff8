import numpy as np
import torch

from coordexp.data import (authors_test_mask, onehot_images, quarter_test_mask, square_centres, square_images,
                           held_out_mask, uniform_test_mask)
from conftest import make_cfg


def test_centres_are_exhaustive_and_in_range():
    centres = square_centres(64, 9)
    assert centres.shape == (3136, 2)
    assert centres.min().item() == 4 and centres.max().item() == 59
    assert len({tuple(c) for c in centres.tolist()}) == 3136  # no duplicates


def test_centres_for_other_canvas_and_square():
    centres = square_centres(32, 5)
    assert centres.shape == (28 * 28, 2)
    assert centres.min().item() == 2 and centres.max().item() == 29


def test_quarter_split_counts_and_rule():
    centres = square_centres(64, 9)
    test = quarter_test_mask(centres, 64)
    assert test.sum().item() == 729 and (~test).sum().item() == 2407
    x, y = centres[:, 0], centres[:, 1]
    assert bool(((x[test] >= 33) & (y[test] >= 33)).all())
    # every training centre is outside the quarter: at least one coordinate <= 32
    assert bool(((x[~test] <= 32) | (y[~test] <= 32)).all())
    assert x[test].min().item() == 33 and y[test].max().item() == 59


def test_uniform_split_counts_seeded_and_disjoint():
    a = uniform_test_mask(3136, 0.2, seed=0)
    assert a.sum().item() == round(3136 * 0.2) == 627
    assert torch.equal(a, uniform_test_mask(3136, 0.2, seed=0))
    assert not torch.equal(a, uniform_test_mask(3136, 0.2, seed=1))
    assert uniform_test_mask(3136, 0.25, seed=0).sum().item() == 784


def test_uniform_split_is_spread_over_the_canvas():
    centres = square_centres(64, 9)
    test = held_out_mask("uniform", centres, make_cfg("split=uniform").data)
    # a random draw lands in every quadrant, unlike the quarter split
    for qx in (False, True):
        for qy in (False, True):
            in_quadrant = ((centres[:, 0] > 32) == qx) & ((centres[:, 1] > 32) == qy)
            assert test[in_quadrant].any()


def test_onehot_images_have_one_pixel_at_the_centre():
    centres = torch.tensor([[4, 59], [30, 5]])
    images = onehot_images(centres, 64)
    assert images.shape == (2, 1, 64, 64)
    assert images.sum(dim=(1, 2, 3)).tolist() == [1.0, 1.0]
    assert images[0, 0, 59, 4] == 1 and images[1, 0, 5, 30] == 1  # row y, column x


def test_square_images_are_9x9_around_the_centre():
    centres = torch.tensor([[4, 4], [40, 20]])
    squares = square_images(centres, 64, 9, 1.0)
    assert squares.shape == (2, 64, 64)
    assert squares.sum(dim=(1, 2)).tolist() == [81.0, 81.0]
    assert squares[1, 16:25, 36:45].min() == 1 and squares[1, 15, 40] == 0 and squares[1, 20, 45] == 0
    assert squares[0, 0:9, 0:9].min() == 1
    gray = square_images(centres, 64, 9, 128 / 255)
    assert torch.allclose(gray.max(), torch.tensor(128 / 255))


def test_authors_draw_reproduces_their_768_test_examples():
    centres = square_centres(64, 9)
    test = authors_test_mask(centres)
    assert (test.sum().item(), (~test).sum().item()) == (768, 2368)
    # their order is x outer, y inner (not_so_clevr_generator.py): the first draws decide centres (4, 4), (4, 5), ...
    first = [centres.tolist().index([4, y]) for y in (4, 5, 6, 7, 8, 9)]
    draws = np.random.RandomState(20202).random_sample(6) < 0.25
    assert test[first].tolist() == draws.tolist()
    # it is what data.uniform_split=authors selects, and it ignores the row-by-row order of our centres
    cfg = make_cfg("split=uniform", "data.uniform_split=authors").data
    assert torch.equal(held_out_mask("uniform", centres, cfg), test)
    assert torch.equal(authors_test_mask(centres.flip(0)), test.flip(0))


def test_uniform_split_fraction_is_exact_and_seeded():
    centres = square_centres(64, 9)
    cfg = make_cfg("split=uniform", "data.test_fraction=0.25", "data.split_seed=3").data
    test = held_out_mask("uniform", centres, cfg)
    assert test.sum().item() == 784 and torch.equal(test, uniform_test_mask(3136, 0.25, 3))
