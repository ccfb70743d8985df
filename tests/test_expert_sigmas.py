"""Wan 2.2 A14B's hand-over in the native path: AlcheMinT Expert Sigmas cuts the schedule so that two samplers chained
on its halves run each step on the expert the pack's own ExpertPair runs it on."""
import pytest
import torch

from alchemint_core.model.experts import WAN22_BOUNDARY, runs_high, split_sigmas
from alchemint_core.sampling.flow import sigma_schedule
from nodes.native import ExpertSigmas


@pytest.mark.parametrize("steps,shift", [(40, 12.0), (8, 5.0), (40, 1.0), (3, 100.0)])
def test_the_cut_gives_each_step_to_the_expert_the_pair_gives_it(steps, shift):
    sigmas = sigma_schedule(steps, shift)
    high, low = ExpertSigmas().split(sigmas, WAN22_BOUNDARY)
    assert torch.equal(torch.cat([high, low[1:]]), sigmas) and high[-1] == low[0]  # nothing lost, the cut shared
    starts = [(float(s), "high") for s in high[:-1]] + [(float(s), "low") for s in low[:-1]]
    assert len(starts) == steps
    assert all(("high" if runs_high(torch.tensor(s)) else "low") == e for s, e in starts)


def test_wan22_a14b_defaults_give_the_high_noise_expert_26_of_40_steps():
    high, low = split_sigmas(sigma_schedule(40, 12.0))
    assert (len(high) - 1, len(low) - 1) == (26, 14)  # 12s / (1 + 11s) >= 0.875 while s >= 0.368


@pytest.mark.parametrize("sigmas,boundary,match", [
    (torch.tensor([1.0]), 0.875, "at least one step"),
    (torch.ones(2, 3), 0.875, "at least one step"),
    (sigma_schedule(4, 3.0), 1.5, "boundary 1.5 must be a noise level in \\(0, 1\\)"),
])
def test_bad_input_is_one_line_naming_the_node(sigmas, boundary, match):
    with pytest.raises(ValueError, match=f"AlcheMinT Expert Sigmas: .*{match}"):
        ExpertSigmas().split(sigmas, boundary)
