import numpy as np
import pytest
import torch

from c2fnas.data.cache import load_case
from c2fnas.data.loader import augment, cut, patch_start, train_batches, validation_cases

IDS = [f"synth_{i:03d}" for i in range(6)]


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_batch_shapes_and_types(run_dir):
    batch = next(train_batches(run_dir, IDS, (16, 16, 8), batch_size=3, seed=0))
    assert batch["image"].shape == (3, 1, 16, 16, 8) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (3, 1, 16, 16, 8) and batch["label"].dtype == torch.int64
    assert set(batch["label"].unique().tolist()) <= {0, 1, 2}


def test_deterministic_for_a_seed(run_dir):
    first = take(train_batches(run_dir, IDS, (16, 16, 8), 4, seed=5), 3)
    again = take(train_batches(run_dir, IDS, (16, 16, 8), 4, seed=5), 3)
    other = take(train_batches(run_dir, IDS, (16, 16, 8), 4, seed=6), 3)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not all(torch.equal(a["image"], c["image"]) for a, c in zip(first, other, strict=True))


def test_one_worker_process_gives_the_in_process_stream(run_dir):
    local = take(train_batches(run_dir, IDS, (16, 16, 8), 2, seed=1, workers=0), 2)
    remote = take(train_batches(run_dir, IDS, (16, 16, 8), 2, seed=1, workers=1), 2)
    for a, b in zip(local, remote, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_foreground_oversampling(run_dir):
    always = take(train_batches(run_dir, IDS, (8, 8, 8), 8, seed=0, foreground_oversample=1), 5)
    assert all((b["label"][i] > 0).any() for b in always for i in range(8))
    fraction = np.mean([(b["label"] > 0).float().mean() for b in always])
    never = take(train_batches(run_dir, IDS, (8, 8, 8), 8, seed=0, foreground_oversample=0), 5)
    assert fraction > np.mean([(b["label"] > 0).float().mean() for b in never])


def test_small_volumes_are_padded(run_dir):
    image, _, _ = load_case(run_dir, IDS[0])
    patch = tuple(size + 9 for size in image.shape[1:])
    batch = next(train_batches(run_dir, IDS[:1], patch, 2, seed=0))
    assert batch["image"].shape[2:] == patch
    # the whole volume is inside the patch, with zeros around it
    assert (batch["image"][0] == 0).sum() >= np.prod(patch) - image[0].size


def test_patch_start_and_cut():
    rng = np.random.default_rng(0)
    starts = {tuple(patch_start(rng, (10, 4, 6), (4, 8, 6))) for _ in range(200)}
    assert {s[0] for s in starts} == set(range(7)) and {s[1] for s in starts} == set(range(-4, 1))
    assert {s[2] for s in starts} == {0}
    volume = np.arange(27).reshape(3, 3, 3)
    piece = cut(volume, (-1, 1, 2), (3, 3, 3))
    assert piece.shape == (3, 3, 3) and piece[0].sum() == 0
    assert piece[1, 0, 0] == volume[0, 1, 2] and piece[1, 2, 0] == 0


def test_augment_moves_image_and_label_together():
    rng = np.random.default_rng(0)
    label = np.random.default_rng(1).integers(0, 3, size=(6, 6, 4)).astype(np.uint8)
    image = label[None].astype(np.float32) * 10
    seen = set()
    for _ in range(60):
        new_image, new_label = augment(image, label, rng)
        assert new_image.shape == image.shape
        np.testing.assert_array_equal(new_image[0], new_label * 10.0)
        # Z stays the slice axis: the set of values per Z slice is unchanged up to a flip
        slices = [sorted(label[:, :, z].ravel()) for z in range(4)]
        moved = [sorted(new_label[:, :, z].ravel()) for z in range(4)]
        assert moved in (slices, slices[::-1])
        seen.add(new_label.tobytes())
    assert len(seen) > 8  # rotations and flips both happen


def test_non_square_patches_rotate_by_half_turns_only():
    rng = np.random.default_rng(0)
    label = np.zeros((6, 4, 2), np.uint8)
    for _ in range(20):
        _, new_label = augment(label[None].astype(np.float32), label, rng)
        assert new_label.shape == (6, 4, 2)


def test_validation_cases(run_dir):
    cases = list(validation_cases(run_dir, IDS[4:]))
    assert [case_id for case_id, _, _ in cases] == IDS[4:]
    _, image, label = cases[0]
    assert image.ndim == 5 and image.shape[:2] == (1, 1) and image.dtype == torch.float32
    assert label.shape == (1, 1, *image.shape[2:]) and label.dtype == torch.int64


def test_bad_arguments(run_dir):
    with pytest.raises(ValueError):
        next(train_batches(run_dir, [], (8, 8, 8), 2, seed=0))
    with pytest.raises(ValueError):
        next(train_batches(run_dir, IDS, (8, 8), 2, seed=0))


def test_case_store_keeps_to_its_budget(run_dir):
    from c2fnas.data.loader import CaseStore

    store = CaseStore(run_dir, budget_bytes=1)
    first = store.get(IDS[0])
    assert store.get(IDS[0]) is first  # cached
    store.get(IDS[1])
    assert list(store.cases) == [IDS[1]]  # the least recently used case was dropped
    roomy = CaseStore(run_dir)
    for case_id in IDS:
        roomy.get(case_id)
    assert list(roomy.cases) == IDS
