"""Datasets, index selection and batch loading.

Small datasets live in memory as uint8 tensors (:class:`TensorImageDataset`); batches are built by
indexing them (:class:`BatchLoader`), never by a Python call per sample.
"""

from __future__ import annotations

from snacs.data.base import ImageDataset, TensorImageDataset, normalize_uint8
from snacs.data.cifar import cifar10, default_data_root, download_cifar10
from snacs.data.cifar_jpeg import cifar10_jpeg
from snacs.data.fashion_mnist import fashion_mnist, read_idx
from snacs.data.folder import ImageFolderDataset, image_folder
from snacs.data.loader import BatchLoader, random_crop_flip
from snacs.data.registry import get_dataset, list_datasets, register_dataset
from snacs.data.sampling import class_balanced_indices, train_val_split
from snacs.data.synthetic import synthetic

__all__ = [
    "BatchLoader",
    "ImageDataset",
    "ImageFolderDataset",
    "TensorImageDataset",
    "cifar10",
    "cifar10_jpeg",
    "class_balanced_indices",
    "default_data_root",
    "download_cifar10",
    "fashion_mnist",
    "get_dataset",
    "image_folder",
    "list_datasets",
    "normalize_uint8",
    "random_crop_flip",
    "read_idx",
    "register_dataset",
    "synthetic",
    "train_val_split",
]
