"""The shared colour composite: noise stays a faint grey, the galaxy's core saturates, z is red."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data.rgb import lupton_rgb, rgb_indices


def _galaxy(noise: float, flux: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    profile = np.exp(-np.hypot(yy - 32, xx - 32) / 4.0)
    colours = np.array([0.5, 1.0, 1.4, 1.8])[:, None, None]  # a red galaxy: brighter in z than in g
    return (flux * colours * profile + rng.normal(0, noise, (4, 64, 64))).astype(np.float32)


@pytest.mark.parametrize("flux", [1.0, 100.0])
def test_noise_faint_core_bright_at_any_brightness(flux):
    img = lupton_rgb(_galaxy(noise=0.01 * flux, flux=flux))
    sky = img[:10, :10].mean(axis=-1)
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    assert np.median(sky) < 40  # the sky reads as dark grey, not as coloured noise
    assert img[32, 32].max() >= 200  # the core is bright whatever the flux units
    assert img[30:35, 30:35, 0].mean() > img[30:35, 30:35, 2].mean()  # z-bright galaxy looks red


def test_stretch_dims_and_errors():
    cube = _galaxy(0.01, 1.0)
    assert lupton_rgb(cube, stretch=4.0).mean() < lupton_rgb(cube).mean()
    with pytest.raises(ValueError, match="stretch"):
        lupton_rgb(cube, stretch=0)
    with pytest.raises(ValueError, match="bands, H, W"):
        lupton_rgb(cube[0])
    assert rgb_indices(5, "image_hsc") == (2, 1, 0) and rgb_indices(2, "unknown") == (1, 1, 0)
