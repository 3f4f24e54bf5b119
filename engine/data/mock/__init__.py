"""Mock survey: galaxies, stars and quasars with Legacy Survey / HSC images, DESI / SDSS
spectra, Gaia photometry and XP coefficients, segmentation truth and physical truth.

Entry point: :func:`generate` (CLI: ``aion-engine mock``). Submodules: ``sky`` (positions,
clustering), ``population`` (physical properties), ``sed`` (analytic spectra),
``photometry`` (speclite filter curves), ``structure`` (galaxy components), ``images``
(GalSim rendering), ``segmaps``, ``spectra`` (spectrographs), ``xp`` (Gaia XP), ``objects``
(one object end to end), ``preview`` (contact sheets).
"""

from engine.data.mock.generate import generate

__all__ = ["generate"]
