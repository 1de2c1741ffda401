"""Workers' results cross through shared memory: the same values as through the pipe,
and a slot is reused once its result is taken."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import classifier
import classifier.outbox
import classifier.parallel
from classifier.outbox import Outbox, Shipped
from classifier.parallel import analyze_parallel, plan_tasks
from classifier.rules import load_rules

CTX = multiprocessing.get_context("fork")


def _value() -> dict[str, Any]:
    return {"flows": np.arange(300_000, dtype=np.int64).reshape(-1, 6),
            "odd": np.arange(10, dtype=np.int8)[::3],  # not contiguous: in the pickle
            "small": np.ones(3, np.uint16), "text": "kept"}


def test_a_result_crosses_with_its_arrays_equal_and_writable() -> None:
    box = Outbox(CTX, 1)
    box.join()
    value = _value()
    shipped = box.ship(value)
    assert isinstance(shipped, Shipped)
    assert len(pickle.dumps(shipped)) < 10_000  # the arrays are not in the pipe's pickle
    got = box.receive(shipped)
    assert got["text"] == "kept"
    for key in ("flows", "odd", "small"):
        np.testing.assert_array_equal(got[key], value[key])
        assert got[key].dtype == value[key].dtype
    got["flows"][0, 0] = -1  # the result's own memory, not the slot's
    again = box.ship(_value())
    assert isinstance(again, Shipped)  # the slot was freed when taken
    assert box.receive(again)["flows"][0, 0] == 0 and got["flows"][0, 0] == -1


def test_a_busy_slot_a_small_or_a_too_large_result_goes_through_the_pipe() -> None:
    box = Outbox(CTX, 1, slot_bytes=4 << 20)
    box.join()
    first = box.ship(_value())
    assert isinstance(first, Shipped)
    value = _value()
    assert box.ship(value) is value  # the first is not taken yet
    box.receive(first)
    assert box.ship({"a": np.zeros(10)})["a"].size == 10  # small: as it is
    big = {"a": np.zeros(1 << 20)}  # 8 MB
    assert box.ship(big) is big
    assert box.receive(big) is big  # anything not shipped is received as it is


def test_slots_go_one_to_each_worker_and_run_out() -> None:
    box = Outbox(CTX, 2)
    slots: list[int | None] = []
    for _ in range(3):
        box.slot = None
        box.join()
        slots.append(box.slot)
    assert slots == [0, 1, None]
    value = _value()
    assert box.ship(value) is value  # no slot: through the pipe


def test_results_shipped_from_workers_merge_as_in_one_process(
        pcaps_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six captures on two processes, results through the slots (the size floor
    lifted): the whole results are those of one process."""
    monkeypatch.setattr(classifier.outbox, "MIN_BYTES", 0)
    shipped: list[bool] = []
    receive = Outbox.receive

    def counted(self: Outbox, value: Any) -> Any:
        shipped.append(isinstance(value, Shipped))
        return receive(self, value)

    monkeypatch.setattr(Outbox, "receive", counted)
    names = ["office365-mix.pcap", "ipv4.pcap", "ethernet-vlan.pcap", "ipv6.pcap",
             "linux-sll.pcap", "ethernet-mpls.pcap"]
    files = [str(pcaps_dir / n) for n in names]
    rules = load_rules()
    got = analyze_parallel(files, rules, jobs=2, tasks=plan_tasks(files, 2, split=False))
    assert [r.to_dict() for r in got] == [classifier.analyze(f).to_dict() for f in files]
    # The first result finds its worker's slot free; a later one may find its slot
    # still being read (then it goes through the pipe).
    assert len(shipped) == len(files) and any(shipped)


def test_a_worker_failure_is_raised_in_the_merging_process(
        pcaps_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Results are taken in by the pool's thread: a task's exception still reaches
    the caller, not that thread."""
    task = classifier.parallel._task

    def failing(board: Any, row: int, index: int, *rest: Any) -> Any:
        if index == 1:
            raise ValueError("task 1 failed")
        return task(board, row, index, *rest)

    monkeypatch.setattr(classifier.parallel, "_task", failing)
    files = [str(pcaps_dir / n) for n in ("office365-mix.pcap", "ipv4.pcap", "ipv6.pcap")]
    with pytest.raises(ValueError, match="task 1 failed"):
        analyze_parallel(files, load_rules(), jobs=2, tasks=plan_tasks(files, 2, split=False))
