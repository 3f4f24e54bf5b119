"""GalSim rendering of mock galaxies: the Fourier-space renderer equals GalSim's own drawing, light
shares add up, and the segmentation truth covers the rendered arms and bars."""

from __future__ import annotations

import galsim
import numpy as np
import pytest

from engine.data import schema
from engine.data.mock import images, segmaps
from engine.data.mock.structure import Component, Knots, build_galaxy

OLD = np.array([10.0, 25.0, 35.0, 42.0])  # nanomaggies per LS band: a red population
YOUNG = np.array([12.0, 13.0, 13.5, 14.0])  # and a blue one


def test_kspace_render_equals_galsim_drawimage():
    prof = galsim.Sersic(n=2.5, half_light_radius=1.5).shear(q=0.6, beta=0.4 * galsim.radians).shift(0.7, -0.3)
    comps = [Component("body", "bulge", prof, {"old": 1.0})]
    stamp = images.render(images.LS, comps, {"old": OLD}, np.random.default_rng(1), detail_band=1)
    for b in range(4):
        psf = galsim.Moffat(beta=images.MOFFAT_BETA, fwhm=float(stamp.psf_fwhm[b]))
        # GalSim centres an even stamp between pixels; ours puts the object on pixel size/2
        ref = galsim.Convolve(prof.withFlux(OLD[b]).shift(0.5 * images.LS.scale, 0.5 * images.LS.scale), psf)
        ref = ref.drawImage(nx=96, ny=96, scale=images.LS.scale).array
        np.testing.assert_allclose(stamp.model[b], ref, atol=2e-4 * ref.max())
    np.testing.assert_allclose(stamp.component_images["body"], stamp.model[1], rtol=1e-5, atol=1e-7)


def test_knots_fourier_image_equals_galsim_sum():
    rng = np.random.default_rng(3)
    knots = Knots(rng.normal(0, 2, 7), rng.normal(0, 2, 7), np.full(7, 1 / 7), 0.2)
    ref = galsim.Sum([galsim.Gaussian(sigma=0.2, flux=1 / 7).shift(x, y) for x, y in zip(knots.x, knots.y, strict=True)])
    grid, kx = images.k_grid(images.LS.scale, 96)
    want = ref.drawKImage(nx=grid, ny=grid, scale=float(kx[1] - kx[0])).array
    np.testing.assert_allclose(images.component_kimage(knots, grid, kx), want, atol=1e-5)


@pytest.mark.parametrize("morph", range(10))
def test_population_light_shares_sum_to_one(morph):
    model = build_galaxy(morph, 2.5, np.random.default_rng(morph), lens_theta_e=2.0 if morph == 2 else None)
    totals: dict[str, float] = {}
    for comp in model.components:
        for pop, share in comp.shares.items():
            totals[pop] = totals.get(pop, 0.0) + share
            assert share >= 0
    for pop, total in totals.items():
        assert total == pytest.approx(1.0), (schema.MORPHOLOGY_CLASSES[morph], pop)


def _render(morph: int, seed: int):
    rng = np.random.default_rng(seed)
    model = build_galaxy(morph, 3.0, rng)
    stamp = images.render(images.LS, model.components, {"old": OLD, "young": YOUNG}, rng, detail_band=1)
    seg = segmaps.segmap(model.components, stamp.component_images, float(stamp.sigma[1]))
    return model, stamp, seg


def _covered(stamp, seg, name_prefix: str, cls: str) -> tuple[float, int]:
    img = sum(v for k, v in stamp.component_images.items() if k.startswith(name_prefix))
    bright = img > 3 * stamp.sigma[1]
    inside = (seg & schema.SEGMENTATION_BIT[cls]) > 0
    return float(img[bright & inside].sum() / img[bright].sum()), int(inside.sum())


@pytest.mark.parametrize(("morph", "seed"), [(5, 1), (5, 2), (6, 3), (7, 4)])
def test_segmentation_covers_rendered_arms_and_bar(morph, seed):
    _, stamp, seg = _render(morph, seed)
    arm_cover, arm_area = _covered(stamp, seg, "arms", "arms")
    disk_area = int(((seg & schema.SEGMENTATION_BIT["disk"]) > 0).sum())
    assert arm_cover > 0.6, arm_cover
    assert 0 < arm_area < 0.8 * disk_area  # arms are a pattern on the disk, not the whole disk
    if morph == 5:
        bar_cover, bar_area = _covered(stamp, seg, "bar", "bar")
        assert bar_cover > 0.5 and bar_area > 10


def test_smooth_and_edge_on_shapes():
    for morph, seed in ((2, 0), (4, 0), (8, 0)):
        model, _, seg = _render(morph, seed)
        e = np.hypot(*model.shape)
        if morph == 2:
            assert e < 0.1
        elif morph == 4:
            assert e > 0.5
        else:
            assert e > 0.75  # q < 0.14: a thin disk
        assert not (seg & (schema.SEGMENTATION_BIT["arms"] | schema.SEGMENTATION_BIT["bar"])).any()


def test_noise_mask_and_ivar_are_consistent():
    comps = [Component("pt", None, galsim.DeltaFunction(), {"star": 1.0})]
    hits = 0
    for seed in range(30):
        stamp = images.render(images.HSC, comps, {"star": np.full(5, 50.0)}, np.random.default_rng(seed))
        assert ((stamp.ivar == 0) == stamp.mask).all()
        resid = (stamp.image - stamp.model)[~stamp.mask]
        sig = np.repeat(stamp.sigma, 96 * 96).reshape(stamp.image.shape)[~stamp.mask]
        assert np.std(resid / sig) == pytest.approx(1.0, abs=0.03)
        assert stamp.model.sum() == pytest.approx(5 * 50.0 * images.HSC.unit_per_nmgy, rel=0.02)
        hits += int(stamp.mask.any())
    assert 0 < hits < 30  # artefacts are occasional
