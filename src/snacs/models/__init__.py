"""Model zoo: CIFAR VGG16/ResNets/MobileNetV2, ImageNet ResNet-50, a tiny test CNN.

Build models by name with `create_model`; importing this package registers them all.
"""

from __future__ import annotations

from snacs.models.checkpoint import extract_state_dict, load_weights
from snacs.models.mobilenetv2 import MobileNetV2, mobilenetv2
from snacs.models.registry import create_model, is_model, list_models, register_model
from snacs.models.resnet_cifar import (
    CifarResNet,
    PadShortcut,
    PadShortcutPruner,
    customized_pruners,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)
from snacs.models.resnet_imagenet import ImageNetResNet, resnet50
from snacs.models.simplecnn import SimpleCNN, simplecnn
from snacs.models.vgg import VGG, vgg16

__all__ = [
    "register_model",
    "create_model",
    "list_models",
    "is_model",
    "load_weights",
    "extract_state_dict",
    "VGG",
    "CifarResNet",
    "PadShortcut",
    "PadShortcutPruner",
    "customized_pruners",
    "MobileNetV2",
    "ImageNetResNet",
    "SimpleCNN",
    "vgg16",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "mobilenetv2",
    "resnet50",
    "simplecnn",
]
