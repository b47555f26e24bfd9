import itertools
import math

import pytest

from c2fnas.space import (
    TopologyError,
    count_unpruned_walks,
    distance,
    u_shaped_topologies,
    validate_levels,
    wiring,
)

PANC = (0, 0, 1, 1, 2, 3, 2, 2, 1, 0, 0, 0)


def test_924_distinct_u_shaped_topologies_in_stable_order():
    codes = u_shaped_topologies()
    assert len(codes) == 924 == math.comb(12, 6)
    assert len(set(codes)) == 924
    assert codes[0] == (1, 2, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0)
    assert codes[-1] == (0, 0, 0, 0, 0, 0, 1, 2, 3, 2, 1, 0)
    assert PANC in codes
    for code in codes:
        validate_levels(code, u_shape=True)


def _brute_force_walks(end_at_zero):
    count = 0
    for moves in itertools.product((-1, 0, 1), repeat=12):
        levels = list(itertools.accumulate(moves))
        if all(0 <= level <= 3 for level in levels) and (levels[-1] == 0 or not end_at_zero):
            count += 1
    return count


@pytest.mark.parametrize("end_at_zero", [True, False])
def test_unpruned_count_matches_brute_force(end_at_zero):
    assert count_unpruned_walks(end_at_zero=end_at_zero) == _brute_force_walks(end_at_zero)
    assert count_unpruned_walks() == 14445


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ([0] * 11, "12 levels"),
        ([0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], "jumps from level 0 to 2"),
        ([0, 1, 2, 3, 4, 3, 2, 1, 0, 0, 0, 0], "levels run from 0 to 3"),
        ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], "last cell must be at level 0"),
        ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1], "levels run from 0 to 3"),
        ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.5], "must be an integer"),
        ("000000000000", "list of 12 integers"),
    ],
)
def test_invalid_codes_are_rejected_with_reason(levels, message):
    with pytest.raises(TopologyError, match=message):
        validate_levels(levels)


def test_u_shape_prior_is_checked_only_when_asked():
    zigzag = (1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0)
    assert validate_levels(zigzag) == zigzag
    with pytest.raises(TopologyError, match="not U-shaped"):
        validate_levels(zigzag, u_shape=True)
    with pytest.raises(TopologyError, match="not U-shaped"):
        validate_levels((0,) * 12, u_shape=True)


def test_distance_is_euclidean():
    assert distance(PANC, PANC) == 0
    assert distance((0,) * 12, (1,) * 11 + (0,)) == pytest.approx(math.sqrt(11))
    with pytest.raises(TopologyError):
        distance((0,) * 12, (0,) * 11)


def test_wiring_of_c2fnas_panc_matches_the_paper():
    second_inputs = {w.cell: w.inputs[1] for w in wiring(PANC) if len(w.inputs) == 2}
    assert second_inputs == {2: 0, 7: 5, 9: 4, 10: 2, 12: 10}
    assert all(w.inputs[0] == w.cell - 1 for w in wiring(PANC))


def test_wiring_in_the_924_space_has_at_most_two_inputs_at_the_cell_level():
    for code in u_shaped_topologies():
        for cell in wiring(code):
            assert 1 <= len(cell.inputs) <= 2
            assert abs(cell.level - cell.input_levels[0]) <= 1
            if len(cell.inputs) == 2:
                assert cell.input_levels[1] == cell.level
                assert cell.inputs[1] < cell.inputs[0]


def test_every_up_move_gets_the_encoder_skip():
    for code in u_shaped_topologies():
        levels = (0, *code)
        for cell in wiring(code):
            if cell.level < levels[cell.cell - 1]:
                skip = cell.inputs[1]
                # the skip is the node right before the matching down move from this level
                assert levels[skip] == cell.level and levels[skip + 1] == cell.level + 1
