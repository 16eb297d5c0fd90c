"""Backbone registrations: torchvision families, CIFAR ResNets, and the `timm/<name>` namespace (imgcls[timm])."""

from . import cifar_resnet, timm_models, torchvision_models  # noqa: F401  (registration side effects)
