"""The knowledge-augmented memory bank (Eq. 4-6) against hand-computed values, placement, checkpoints, and
identical banks across two gloo ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trelm.memory import MemoryBank, window_means

GAMMA = 0.25


def _bank(
    initial: torch.Tensor | None = None, placement: str = "auto", max_bytes: int = 1 << 30
) -> MemoryBank:
    return MemoryBank(np.array([3, 7, 9]), 2, GAMMA, placement, max_bytes, initial)


def test_row_of_finds_bank_rows_and_marks_the_rest():
    assert _bank().row_of([9, 3, 4, 100, -1, 7]).tolist() == [2, 0, -1, -1, -1, 1]


def test_window_mean_clips_to_the_sequence_and_skips_padding():
    hidden = torch.tensor([0.0, 1, 2, 3, 4, 5, 100, 100]).view(1, 8, 1)  # 100 = padding, must not leak in
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    batch, start, end = torch.tensor([0, 0, 0]), torch.tensor([4, 0, 2]), torch.tensor([5, 2, 4])
    means = window_means(hidden, mask, batch, start, end, k=2).flatten()
    # span [4,5) -> window 2..6, 6 is padding -> mean(2,3,4,5);
    # span [0,2) -> window -2..3 clipped -> mean(0..3);
    # span [2,4) -> window 0..5, all six real positions (the paper's 2k+r-l = 5 would be one short)
    assert means.tolist() == pytest.approx([3.5, 1.5, 2.5])


def test_moving_average_applies_two_occurrences_in_batch_order():
    start = torch.tensor([[1.0, 2.0], [0.0, 0.0], [4.0, -4.0]])
    bank = _bank(start.clone())
    v = torch.tensor([[10.0, 0.0], [0.0, 10.0], [2.0, 2.0]])
    zeros = torch.zeros(3, 2)
    bank.update(torch.tensor([0, 0, 2]), v, zeros, zeros, torch.tensor([True, False, True]))
    first = (1 - GAMMA) * start[0] + GAMMA * v[0]
    assert torch.allclose(bank.local[0], (1 - GAMMA) * first + GAMMA * v[1])
    assert torch.allclose(bank.local[2], (1 - GAMMA) * start[2] + GAMMA * v[2])
    assert torch.equal(bank.local[1], start[1])  # untouched row
    sequential = _bank(start.clone())
    for j in range(3):
        sequential.update(
            torch.tensor([[0, 0, 2][j]]), v[j : j + 1], zeros[:1], zeros[:1], torch.tensor([True])
        )
    assert torch.allclose(sequential.local, bank.local)


def test_lazy_start_is_read_until_the_first_update_then_decays():
    bank = _bank()
    fallback = torch.tensor([[5.0, 6.0]])
    local, global_ = bank.read(torch.tensor([1]), fallback)
    assert torch.equal(local, fallback) and torch.equal(global_, fallback)
    v, cls, init = (
        torch.tensor([[1.0, 1], [3, 3]]),
        torch.tensor([[2.0, 0], [9, 9]]),
        torch.tensor([[5.0, 6], [0, 0]]),
    )
    bank.update(
        torch.tensor([1, 1]), v, cls, init, torch.tensor([True, False])
    )  # the start: first occurrence's
    expected = (1 - GAMMA) ** 2 * init[0] + GAMMA * (1 - GAMMA) * v[0] + GAMMA * v[1]
    local, global_ = bank.read(torch.tensor([1]), torch.full((1, 2), -1.0))
    assert torch.allclose(local[0], expected)
    assert torch.equal(global_[0], cls[0])  # the repeat in the same sequence is not a new context


def test_global_memory_is_the_running_mean_of_cls_over_contexts():
    bank = _bank()
    cls = [torch.tensor([[2.0, 4.0]]), torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 2.0]])]
    for c in cls:
        bank.update(torch.tensor([2]), torch.zeros(1, 2), c, torch.zeros(1, 2), torch.tensor([True]))
    assert torch.allclose(bank.global_[2], torch.tensor([2.0, 2.0]))
    assert bank.count.tolist() == [0, 0, 3]


def _random_updates(bank: MemoryBank, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        rows = torch.randint(0, 3, (5,), generator=g)
        v, c, i = (torch.randn(5, 2, generator=g) for _ in range(3))
        bank.update(rows, v, c, i, torch.rand(5, generator=g) < 0.7)


@pytest.mark.parametrize("placement", ["host", "device"])
def test_host_and_device_placement_give_identical_banks(placement):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    reference, placed = _bank(), _bank(placement=placement)
    assert placed.place(device).type == ("cpu" if placement == "host" else device)
    _random_updates(reference, 0)
    _random_updates(placed, 0)
    assert all(
        torch.equal(a, b.cpu())
        for a, b in zip(reference.state_dict().values(), placed.state_dict().values(), strict=True)
    )


def test_auto_placement_keeps_an_oversized_bank_on_the_host():
    bank = _bank(placement="auto", max_bytes=8)
    assert bank.nbytes == 3 * 2 * 4 * 2 + 3 * 8 + 3
    assert bank.place("cpu").type == "cpu"


def test_state_dict_round_trip_and_entity_check():
    bank = _bank()
    _random_updates(bank, 1)
    restored = _bank()
    restored.load_state_dict(bank.state_dict())
    assert all(
        torch.equal(a, b)
        for a, b in zip(bank.state_dict().values(), restored.state_dict().values(), strict=True)
    )
    other = MemoryBank(np.array([3, 7, 8]), 2, GAMMA)
    with pytest.raises(ValueError, match="other entities"):
        other.load_state_dict(bank.state_dict())


def _rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    bank = _bank()
    g = torch.Generator().manual_seed(100 + rank)
    for step in range(2):
        n = 2 + rank + step  # different counts per rank: the gather pads
        rows = torch.randint(0, 3, (n,), generator=g)
        v, c, i = (torch.randn(n, 2, generator=g) for _ in range(3))
        torch.save((rows, v, c, i), f"{out_dir}/input-{rank}-{step}.pt")
        bank.update(rows, v, c, i, torch.ones(n, dtype=torch.bool))
    torch.save(bank.state_dict(), f"{out_dir}/bank-{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_ranks_keep_identical_banks_equal_to_rank_ordered_updates(tmp_path):
    torch.multiprocessing.spawn(_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    banks = [torch.load(tmp_path / f"bank-{rank}.pt") for rank in range(2)]
    assert all(torch.equal(banks[0][key], banks[1][key]) for key in banks[0])
    reference = _bank()
    for step in range(2):
        inputs = [torch.load(tmp_path / f"input-{rank}-{step}.pt") for rank in range(2)]
        rows, v, c, i = (torch.cat(parts) for parts in zip(*inputs, strict=True))
        reference.update(rows, v, c, i, torch.ones(len(rows), dtype=torch.bool))
    assert all(torch.allclose(reference.state_dict()[key].float(), banks[0][key].float()) for key in banks[0])
    assert int(banks[0]["count"].sum()) == 2 + 3 + 3 + 4
