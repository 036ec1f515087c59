"""Batch iteration: one indexing operation per batch, seeded epoch order, rank sharding."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from snacs.data.base import TensorImageDataset
from snacs.data.folder import ImageFolderDataset
from snacs.errors import ConfigError

__all__ = ["BatchLoader", "random_crop_flip"]


def random_crop_flip(
    images: torch.Tensor, generator: torch.Generator, padding: int = 4
) -> torch.Tensor:
    """CIFAR-style augmentation of a whole batch: random crop after zero padding, random h-flip.

    Every sample gets its own offsets and flip, drawn from ``generator``; the crop and the flip
    are one gather with per-sample row/column indices, so there is no loop over samples.

    Args:
        images: B×C×H×W batch (any dtype; uint8 pads with black, as torchvision does on PIL).
        generator: source of the offsets and flips.
        padding: pixels of zero padding on each side.

    Returns:
        A new B×C×H×W tensor.
    """
    b, c, h, w = images.shape
    if b == 0:
        return images.clone()
    padded = images.new_zeros(b, c, h + 2 * padding, w + 2 * padding)
    padded[:, :, padding : padding + h, padding : padding + w] = images
    oy = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator)
    flip = torch.rand(b, 1, generator=generator) < 0.5
    rows = oy + torch.arange(h)
    ar = torch.arange(w)
    cols = ox + torch.where(flip, w - 1 - ar, ar)  # flipping = reading the crop's columns backwards
    return padded[
        torch.arange(b).view(b, 1, 1, 1),
        torch.arange(c).view(1, c, 1, 1),
        rows.view(b, 1, h, 1),
        cols.view(b, 1, 1, w),
    ]


def _mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from several integers (seed, epoch, rank, stream)."""
    state = np.random.SeedSequence([p % (1 << 64) for p in parts]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


class _Uint8View(Dataset):
    """Makes a lazily decoded dataset yield uint8 images, so batches are augmented as uint8."""

    def __init__(self, dataset: ImageFolderDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.dataset.load_uint8(index), int(self.dataset.labels[index])


class BatchLoader:
    """Iterate over normalised ``(x, y)`` batches of a dataset.

    For a :class:`TensorImageDataset` each batch is one index into the uint8 tensor, then one
    (optional) vectorised augmentation and one normalisation. An :class:`ImageFolderDataset` is
    decoded by a ``torch.utils.data.DataLoader`` (``num_workers`` processes) and treated the same
    way afterwards. Any other map-style dataset returning ``(tensor, label)`` also works; it is
    augmented after its own normalisation, so its padding is 0 in normalised units.

    The order of an epoch depends only on ``seed + epoch`` (as in ``DistributedSampler``): call
    :meth:`set_epoch` before each epoch and a resumed run sees the same batches. With
    ``world_size > 1`` the shuffled order is truncated to a multiple of ``world_size`` and rank
    ``r`` takes every ``world_size``-th index from ``r``, so shards are disjoint and equal-sized.

    Args:
        dataset: the dataset.
        batch_size: samples per batch.
        indices: subset of the dataset to iterate (default all), e.g. a train split.
        shuffle: reshuffle every epoch.
        augment: random crop (4-px zero padding) and horizontal flip.
        seed: base seed of shuffling and augmentation.
        drop_last: drop the last incomplete batch.
        rank: this process's shard.
        world_size: number of shards.
        num_workers: decoding processes for lazily decoded datasets.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        indices: torch.Tensor | Sequence[int] | np.ndarray | None = None,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
        n = len(dataset)  # type: ignore[arg-type]
        if indices is None:
            idx = torch.arange(n)
        else:
            idx = (
                torch.as_tensor(
                    np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices
                )
                .to(torch.int64)
                .reshape(-1)
            )
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise ConfigError(
                    f"indices must lie in [0, {n}), got [{int(idx.min())}, {int(idx.max())}]"
                )
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.indices = idx
        self.shuffle = shuffle
        self.augment = augment
        self.seed = int(seed)
        self.drop_last = drop_last
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.num_workers = int(num_workers)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order (and augmentation) the next iteration uses."""
        self.epoch = int(epoch)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (before ``drop_last``)."""
        return self.indices.numel() // self.world_size

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch_indices(self, epoch: int | None = None) -> torch.Tensor:
        """The dataset indices this rank visits in ``epoch`` (default the current one), in order."""
        epoch = self.epoch if epoch is None else int(epoch)
        order = self.indices
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            order = order[torch.randperm(order.numel(), generator=gen)]
        total = self.num_samples * self.world_size
        order = order[self.rank : total : self.world_size]
        if self.drop_last:
            order = order[: len(self) * self.batch_size]
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.epoch_indices()
        gen = None
        if self.augment:
            gen = torch.Generator().manual_seed(_mix_seed(self.seed, self.epoch, self.rank, 1))
        batches = torch.split(order, self.batch_size)
        ds = self.dataset
        if isinstance(ds, TensorImageDataset):
            for idx in batches:
                x = ds.images[idx]
                if gen is not None:
                    x = random_crop_flip(x, gen)
                yield ds.normalize(x), ds.labels[idx]
            return
        uint8 = isinstance(ds, ImageFolderDataset)
        loader = DataLoader(
            _Uint8View(ds) if uint8 else ds,
            batch_sampler=[b.tolist() for b in batches],
            num_workers=self.num_workers,
        )
        for x, y in loader:
            if gen is not None:
                x = random_crop_flip(x, gen)
            if uint8:
                x = ds.normalize(x)
            yield x.float(), y.to(torch.int64)
