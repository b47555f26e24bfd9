import json

import pytest

from c2fnas.data.splits import SEARCH_FOLD, load_or_create, make_folds

IDS = [f"case_{i:02d}" for i in range(12)]


def test_ordered_folds_follow_dataset_order():
    folds = make_folds(IDS)
    assert len(folds) == 5
    assert [fold.val for fold in folds][:2] == [IDS[0:3], IDS[3:6]]
    assert folds[SEARCH_FOLD].val == IDS[10:12]  # the paper validates the search on fold 5
    assert folds[SEARCH_FOLD].train == IDS[:10]
    for fold in folds:
        assert sorted(fold.train + fold.val) == sorted(IDS) and not set(fold.train) & set(fold.val)


def test_shuffled_is_seeded():
    first, again = make_folds(IDS, "shuffled", seed=1), make_folds(IDS, "shuffled", seed=1)
    assert first == again
    assert first != make_folds(IDS, "shuffled", seed=2)
    assert first != make_folds(IDS)
    assert sorted(case for fold in first for case in fold.val) == sorted(IDS)


def test_saved_and_reused(tmp_path):
    folds = load_or_create(tmp_path, IDS, "shuffled", seed=7)
    saved = json.loads((tmp_path / "splits.json").read_text())
    assert saved[0] == {"train": folds[0].train, "val": folds[0].val}
    assert load_or_create(tmp_path, IDS) == folds  # reused, not remade in order


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="at least 5"):
        make_folds(IDS[:4])
    with pytest.raises(ValueError, match="ordered"):
        make_folds(IDS, "random")
    load_or_create(tmp_path, IDS)
    with pytest.raises(ValueError, match="splits.json"):
        load_or_create(tmp_path, IDS[:-1])
    (tmp_path / "splits.json").write_text("[{}]")
    with pytest.raises(ValueError, match="malformed"):
        load_or_create(tmp_path, IDS)
