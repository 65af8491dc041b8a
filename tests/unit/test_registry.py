"""Tank -> row: fixed order, free rows reused, assigned rows never move."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.registry import TankRegistry


def test_rows_in_order_of_first_sight_and_stable() -> None:
    reg = TankRegistry()
    assert [reg.add(t) for t in ("B", "A", "C", "A")] == [0, 1, 2, 1]
    assert reg.ids() == ["B", "A", "C"] and len(reg) == 3 and reg.capacity == 3


def test_released_rows_are_reused_lowest_first() -> None:
    reg = TankRegistry()
    for t in "ABCDE":
        reg.add(t)
    assert sorted(reg.release(["D", "B", "nope"])) == [1, 3]
    assert reg.tank_at(1) is None and "B" not in reg
    assert reg.add("X") == 1 and reg.add("Y") == 3 and reg.add("Z") == 5
    assert reg.items() == [("A", 0), ("X", 1), ("C", 2), ("Y", 3), ("E", 4), ("Z", 5)]


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 15)), max_size=80))
def test_assigned_tanks_never_move(ops: list[tuple[bool, int]]) -> None:
    reg = TankRegistry()
    rows: dict[str, int] = {}
    for add, k in ops:
        tank = f"T{k}"
        if add:
            row = reg.add(tank)
            assert rows.setdefault(tank, row) == row
        else:
            reg.release([tank])
            rows.pop(tank, None)
        for t, r in rows.items():  # every assigned tank still where it was
            assert reg.row(t) == r
        assert len(set(rows.values())) == len(rows)
