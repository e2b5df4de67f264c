"""eigenmap.dist works as a world of one without a process group."""

from __future__ import annotations

import torch

from eigenmap import dist


def test_helpers_without_process_group_behave_as_a_single_rank():
    assert (dist.get_rank(), dist.get_world_size(), dist.is_dist(), dist.is_main_process()) == (0, 1, False, True)
    x = torch.randn(3, 2, requires_grad=True)
    assert dist.gather(x) is x
    assert torch.equal(dist.all_reduce_mean(x), x.detach())
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    dist.barrier()
