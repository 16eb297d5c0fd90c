"""Backbone registrations: torchvision families plus CIFAR ResNets."""

from . import cifar_resnet, torchvision_models  # noqa: F401  (registration side effects)
