"""Every model family; importing this package registers all of them."""

from zoo.models import (  # noqa: F401  (imported for their registrations)
    alexnet,
    mobilenet_v1,
    mobilenet_v2,
    resnet,
    shufflenet_v1,
    shufflenet_v2,
    squeezenet,
)
from zoo.models._base import ZooModel

__all__ = ["ZooModel"]

# Binary twins (bwn_*, xnor_*) of every float model above; registered last so they can see them.
from zoo.binary import variants  # noqa: E402, F401
