import numpy as np
import pytest

from erasekit.eval.metrics import frechet_distance
from erasekit.judges import harmonic_mean


def test_frechet_distance_is_zero_on_itself_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    b = rng.normal(size=(500, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    near = frechet_distance(a, b)
    far = frechet_distance(a, b + 1.0)
    assert near < 0.3 and far == pytest.approx(8.0 + near, abs=1.0)


def test_frechet_distance_needs_two_samples():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))


def test_harmonic_mean():
    assert harmonic_mean(1.0, 1.0, 1.0) == 1.0
    assert harmonic_mean(0.5, 1.0) == pytest.approx(2 / 3)
    assert harmonic_mean(0.0, 1.0) == 0.0
