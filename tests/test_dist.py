"""eigenmap.dist: a world of one without a process group, and the uneven gather on gloo."""

from __future__ import annotations

import pytest
import torch

from eigenmap import dist


def test_helpers_without_process_group_behave_as_a_single_rank():
    assert (dist.get_rank(), dist.get_world_size(), dist.is_dist(), dist.is_main_process()) == (0, 1, False, True)
    x = torch.randn(3, 2, requires_grad=True)
    assert dist.gather(x) is x
    assert dist.gather_uneven(x) is x
    assert torch.equal(dist.all_reduce_mean(x), x.detach())
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    dist.barrier()


def _uneven_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as tdist

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=3)
    try:
        rows = {0: 3, 1: 0, 2: 2}[rank]  # a rank with nothing: the last shard of a small eval set
        x = torch.arange(rows * 2, dtype=torch.float32).view(rows, 2) + 100 * rank
        torch.save(dist.gather_uneven(x), f"{out_dir}/rank{rank}.pt")
    finally:
        tdist.destroy_process_group()


@pytest.mark.multiprocess
def test_gather_uneven_concatenates_every_ranks_rows_in_rank_order(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_uneven_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=3, start_method="spawn")
    expected = torch.cat([torch.arange(6, dtype=torch.float32).view(3, 2),
                          torch.arange(4, dtype=torch.float32).view(2, 2) + 200])
    for rank in range(3):
        assert torch.equal(torch.load(tmp_path / f"rank{rank}.pt", weights_only=True), expected), rank
