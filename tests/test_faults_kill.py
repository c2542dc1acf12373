"""kill -9 while logging as fast as possible: no run corrupted, no point wrong or duplicated, and
what is lost stays within the documented bound (docs/user-guide.md, docs/reliability.md)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.killing import LOSS_BOUND_S, kill_once

KILLS = 20


@pytest.mark.slow
def test_twenty_kills_at_random_points_lose_at_most_the_bound_and_corrupt_nothing(tmp_path: Path) -> None:
    chance = random.Random(20)
    kills = [kill_once(tmp_path, 10 if i % 2 else 1, chance.uniform(0.3, 2.5)) for i in range(KILLS)]
    assert [k.problem for k in kills if k.problem] == []
    assert sum(k.points for k in kills) > 0
    worst = max(k.seconds_lost for k in kills)
    assert worst <= LOSS_BOUND_S, sorted(round(k.seconds_lost, 3) for k in kills)
