"""Fixtures of the nets tests: the embedded demo LargeFOV and one held-out sample of its data set."""
import pytest

from nets.deeplab import Model, shapes_dataset


@pytest.fixture(scope="session")
def largefov():
    """``demo-largefov``, loaded once for the session."""
    return Model.load("demo-largefov")


@pytest.fixture(scope="session")
def sample():
    """Held-out sample 3: ``(image (97, 97, 3) uint8, labels (97, 97) uint8)``."""
    return shapes_dataset.sample(3, "heldout")
