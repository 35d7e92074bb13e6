"""Data sets: the offline digits, folders of images, and a reproducible held-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import DATASET_NAMES, DatasetUnavailableError, load_dataset, split_held_out


def test_digits_are_real_uint8_images_with_a_stratified_held_out_split(digits) -> None:
    assert digits.input_shape == (28, 28, 1)
    assert digits.train.images.dtype == np.uint8
    assert (len(digits.train), len(digits.validation), len(digits.test)) == (3500, 500, 1000)
    assert np.bincount(digits.test.labels).tolist() == [100] * 10
    assert np.bincount(digits.validation.labels).tolist() == [50] * 10
    assert digits.class_names == tuple("0123456789")
    # Real digits: mostly background with bright strokes, not noise.
    assert 0.05 < float((digits.test.images > 128).mean()) < 0.35


def test_split_is_disjoint_complete_and_reproducible() -> None:
    # Each image carries its own index, so membership can be checked exactly.
    ids = np.arange(600)
    images = ids.astype(np.uint16).view(np.uint8).reshape(600, 1, 2, 1)
    labels = ids % 6

    def members(split):
        return set(split.images.reshape(len(split), 2).copy().view(np.uint16).ravel().tolist())

    train, validation, test = split_held_out(images, labels, seed=3)
    parts = [members(train), members(validation), members(test)]
    assert set().union(*parts) == set(ids.tolist())
    assert sum(len(part) for part in parts) == 600
    again = split_held_out(images, labels, seed=3)
    splits = zip((train, validation, test), again, strict=True)
    assert all(np.array_equal(a.images, b.images) for a, b in splits)
    other = split_held_out(images, labels, seed=4)
    assert not np.array_equal(other[2].images, test.images)


def test_limit_caps_training_images_only() -> None:
    limited = load_dataset("digits", limit=200)
    assert len(limited.train) == 200
    assert len(limited.test) == 1000


def _write_images(folder: Path, mode: str, count: int, value: int) -> None:
    folder.mkdir(parents=True)
    for index in range(count):
        color = value if mode == "L" else (value, 255 - value, index * 10)
        Image.new(mode, (40 + index, 30), color).save(folder / f"{index}.png")


def test_folder_dataset_reads_one_class_per_sub_folder(tmp_path: Path) -> None:
    _write_images(tmp_path / "dogs", "RGB", 10, 200)
    _write_images(tmp_path / "cats", "RGB", 10, 20)
    dataset = load_dataset(f"folder:{tmp_path}", image_size=16)
    assert dataset.class_names == ("cats", "dogs")
    assert dataset.input_shape == (16, 16, 3)
    total = len(dataset.train) + len(dataset.validation) + len(dataset.test)
    assert total == 20
    # Label 0 is "cats", drawn with red 20; label 1 "dogs" with red 200.
    reds = dataset.train.images[..., 0].mean(axis=(1, 2))
    assert np.all(reds[dataset.train.labels == 0] < 30)
    assert np.all(reds[dataset.train.labels == 1] > 190)


def test_grayscale_folders_stay_single_channel(tmp_path: Path) -> None:
    _write_images(tmp_path / "a", "L", 5, 10)
    _write_images(tmp_path / "b", "L", 5, 250)
    assert load_dataset(f"folder:{tmp_path}", image_size=12).input_shape == (12, 12, 1)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "is not a directory"),
        (lambda root: _write_images(root / "only", "L", 3, 5), "at least two"),
        (
            lambda root: ((root / "a").mkdir(parents=True), _write_images(root / "b", "L", 3, 5)),
            "without images",
        ),
    ],
    ids=["missing", "one-class", "empty-class"],
)
def test_folder_errors_say_what_is_wrong(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DatasetUnavailableError, match=message):
        load_dataset(f"folder:{root}")


def test_unknown_dataset_lists_the_valid_names() -> None:
    with pytest.raises(ValueError) as error:
        load_dataset("imagenet")
    for name in DATASET_NAMES:
        assert name in str(error.value)
