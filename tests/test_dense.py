"""Dense timed captions: zero-initialised parallel branch with ReRoPE positions."""
import pytest
import torch

import alchemint_core as ac
from alchemint_core.model.dense import event_frames, rerope_positions
from conftest import TINY, randomize, tiny_model


def dense(spans, e=None, lc=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    spans = torch.tensor([spans], dtype=torch.float64)
    return ac.DenseCaptions(torch.randn(1, spans.shape[1], lc, TINY.text_dim, generator=g), spans)


def test_untrained_branch_changes_nothing():
    base = tiny_model(seed=1)
    with_branch = ac.WanModel(TINY, ac.AdapterConfig(dense_captions=True)).eval()
    with_branch.load_state_dict(base.state_dict(), strict=False)
    for b in with_branch.alchemint.dense:  # output projections stay at their zero init
        assert not b.o.weight.any() and not b.o.bias.any()
    x, t, ctx = torch.randn(1, 16, 5, 4, 4), torch.tensor([500.0]), torch.randn(1, 4, TINY.text_dim)
    torch.testing.assert_close(with_branch(x, t, ctx, dense=dense([[0, 1], [2, 4]])), base(x, t, ctx), rtol=0, atol=0)


def test_trained_branch_uses_the_timed_captions():
    m = tiny_model(seed=1, adapter=ac.AdapterConfig(dense_captions=True))
    randomize(m.alchemint.dense, seed=3)
    x, t, ctx = torch.randn(1, 16, 5, 4, 4), torch.tensor([500.0]), torch.randn(1, 4, TINY.text_dim)
    a = m(x, t, ctx, dense=dense([[0, 1], [2, 4]], seed=1))
    b = m(x, t, ctx, dense=dense([[0, 1], [2, 4]], seed=2))
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("spans", [[[0, 4]], [[0, 1], [2, 4]], [[0, 0], [3, 4]], [[1, 2.5], [2.5, 4]], [[0, 0.2]]])
def test_every_frame_in_an_event_is_closest_to_its_own_caption(spans):
    pos, inside, captions = rerope_positions(torch.tensor(spans, dtype=torch.float64), 5, 8.0)
    for f in range(5):
        owners = [i for i, (s, e) in enumerate(spans) if event_frames(s, e, 5)[0] <= f <= event_frames(s, e, 5)[1]]

        assert bool(inside[f]) == bool(owners)
        if owners:
            d = (captions - pos[f]).abs()
            mine = int(d.argmin())
            assert mine in owners and (d[mine] < d[torch.arange(len(spans)) != mine]).all()


def test_gap_frames_get_no_dense_signal():
    m = tiny_model(seed=1, adapter=ac.AdapterConfig(dense_captions=True))
    randomize(m.alchemint.dense, seed=3)
    x, t, ctx = torch.randn(1, 16, 5, 4, 4), torch.tensor([500.0]), torch.randn(1, 4, TINY.text_dim)
    # events cover frames 0 and 4 only; frames 1-3 are a gap: with one block, their output ignores the captions
    m.blocks = m.blocks[:1]
    m.alchemint.dense = m.alchemint.dense[:1]
    a = m(x, t, ctx, dense=dense([[0, 0], [4, 4]], seed=1))
    b = m(x, t, ctx, dense=dense([[0, 0], [4, 4]], seed=2))
    diff = (a - b).abs().amax(dim=(0, 1, 3, 4))
    assert diff[0] > 1e-5 and diff[4] > 1e-5 and diff[1:4].max() == 0


def test_a_single_event_covering_the_clip_positions_frames_evenly():
    pos, inside, captions = rerope_positions(torch.tensor([[0.0, 4.0]]), 5, 10.0)
    assert inside.all()
    torch.testing.assert_close(pos, torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0], dtype=torch.float64))
    assert captions.tolist() == [5.0]


def test_reversed_spans_are_rejected():
    with pytest.raises(ValueError, match="start <= end"):
        dense([[3, 1]])


def test_events_outside_the_clip_cover_no_frame():
    pos, inside, _ = rerope_positions(torch.tensor([[-3.0, -1.0], [1.0, 2.0]]), 5, 8.0)
    assert inside.tolist() == [False, True, True, False, False]
