"""The training script's data path: cached phantoms and patch augmentation (not a training run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from triage.training import bundle_files
from triage.training.train import (
    PatchDraws,
    cached_sample,
    intensity_augmentation,
    nodule_count,
    plant_nodule,
    sample_batch,
)


def test_a_cached_phantom_is_the_rendered_one(tmp_path: Path) -> None:
    seed = 1  # two nodules
    rendered = cached_sample(seed, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    reloaded = cached_sample(seed, tmp_path)
    assert np.array_equal(rendered["image"], reloaded["image"])
    assert np.array_equal(rendered["target"], reloaded["target"])
    assert rendered["nodules"] == reloaded["nodules"]
    assert rendered["negatives"] == reloaded["negatives"]
    # Attached nodules are listed twice (sampled twice as often), isolated ones once.
    assert nodule_count(seed) <= len(rendered["nodules"]) <= 2 * nodule_count(seed)
    assert float(rendered["target"].max()) > 0.5


def test_augmented_patches_stay_in_range_and_targets_are_untouched(tmp_path: Path) -> None:
    pool = [cached_sample(1, tmp_path)]
    size = bundle_files.PATCH
    x, y = sample_batch(pool, np.random.default_rng(0), 16, intensity_augmentation(0))
    assert x.shape == y.shape == (16, 1, size, size, size)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(y.max()) > 0.5  # nodule patches are drawn
    # Reproducible: the same seeds give the same batch (the recorded weights depend on it).
    again, _ = sample_batch(pool, np.random.default_rng(0), 16, intensity_augmentation(0))
    assert np.array_equal(x.numpy(), again.numpy())
    # One patch drawn alike with and without augmentation: the target is the same, the image changes.
    changed = 0
    augment = intensity_augmentation(1)
    for seed in range(8):
        plain_x, plain_y = sample_batch(pool, np.random.default_rng(seed), 1)
        aug_x, aug_y = sample_batch(pool, np.random.default_rng(seed), 1, augment)
        assert np.array_equal(plain_y.numpy(), aug_y.numpy())
        changed += not np.allclose(plain_x.numpy(), aug_x.numpy())
    assert changed >= 2


def test_a_planted_nodule_sits_on_the_lung_side_of_a_wall() -> None:
    # A wall of soft tissue (x < 16) against lung (x >= 16); the point lies on the wall's surface.
    size = bundle_files.PATCH
    image = np.full((size, size, size), 0.1, np.float32)
    image[:16] = 0.75
    target = np.zeros_like(image)
    rng = np.random.default_rng(4)
    planted, fraction = plant_nodule(image, target, np.array([15, 16, 16]), rng)
    assert float(fraction.max()) == 1.0  # the target is the nodule's voxel fraction
    centre = np.argwhere(fraction > 0.5).mean(axis=0)
    assert centre[0] > 15.0  # moved towards the lung, not into the wall
    changed = np.argwhere(~np.isclose(planted, image))
    assert len(changed) and np.all(fraction[tuple(changed.T)] > 0)  # only the nodule's voxels change
    assert float(planted[fraction == 1].mean()) > 0.5  # nodule density in the lung part
    assert float(planted.min()) >= 0.0 and float(planted.max()) <= 1.0
    # Reproducible for a seed, and the input arrays are left as they were.
    again, _ = plant_nodule(image, target, np.array([15, 16, 16]), np.random.default_rng(4))
    assert np.array_equal(planted, again)
    assert float(target.max()) == 0.0 and float(image.max()) == np.float32(0.75)


def test_patch_draws_split_the_unit_interval_in_order() -> None:
    draws = PatchDraws(nodules=0.3, planted=0.2, negatives=0.3)
    assert [draws.of(d) for d in (0.0, 0.29, 0.3, 0.49, 0.5, 0.79, 0.8, 0.99)] == [
        "nodules",
        "nodules",
        "planted",
        "planted",
        "negatives",
        "negatives",
        "anywhere",
        "anywhere",
    ]
    assert PatchDraws().planted == 0.0  # the reference bundle's recipe plants nothing


def test_planted_patches_carry_a_nodule_on_a_phantom_without_any(tmp_path: Path) -> None:
    pool = [cached_sample(0, tmp_path)]  # seed 0: no nodules (nodule_count(0) == 0)
    assert float(pool[0]["target"].max()) == 0.0
    _, plain = sample_batch(pool, np.random.default_rng(2), 8)
    assert float(plain.max()) == 0.0
    _, planted = sample_batch(pool, np.random.default_rng(2), 8, draws=PatchDraws(0.0, 1.0, 0.0))
    with_nodule = [float(t.max()) >= 0.5 for t in planted]
    assert sum(with_nodule) >= 6  # a few may fall at a patch edge and be cut
