"""The training script's data path: cached phantoms and patch augmentation (not a training run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from triage.training import bundle_files
from triage.training.train import cached_sample, intensity_augmentation, nodule_count, sample_batch


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
