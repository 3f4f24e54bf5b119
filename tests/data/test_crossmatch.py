"""Cross-matching: reciprocal nearest neighbours within a radius, exact against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import crossmatch


def _sep_arcsec(ra1, dec1, ra2, dec2):
    """Haversine separations, all pairs (accurate at sub-arcsecond scales, unlike arccos)."""
    r1, d1 = np.radians(np.asarray(ra1))[:, None], np.radians(np.asarray(dec1))[:, None]
    r2, d2 = np.radians(np.asarray(ra2))[None], np.radians(np.asarray(dec2))[None]
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3600


def test_matches_equal_brute_force_rnn():
    rng = np.random.default_rng(0)
    n = 400
    ra1 = rng.uniform(150, 150.05, n)
    dec1 = rng.uniform(2, 2.05, n)
    pick = rng.choice(n, 300, replace=False)
    ra2 = np.concatenate([ra1[pick] + rng.normal(0, 0.6, 300) / 3600, rng.uniform(150, 150.05, 100)])
    dec2 = np.concatenate([dec1[pick] + rng.normal(0, 0.6, 300) / 3600, rng.uniform(2, 2.05, 100)])
    i1, i2, sep = crossmatch.match(ra1, dec1, ra2, dec2, 1.0)
    d = _sep_arcsec(ra1, dec1, ra2, dec2)
    nn12, nn21 = d.argmin(axis=1), d.argmin(axis=0)
    expect = {(i, int(nn12[i])) for i in range(n) if nn21[nn12[i]] == i and d[i, nn12[i]] <= 1.0}
    assert set(zip(i1.tolist(), i2.tolist(), strict=True)) == expect
    assert len(expect) > 200
    np.testing.assert_allclose(sep, d[i1, i2], atol=1e-6)  # microarcsec
    assert len(set(i1)) == len(i1) and len(set(i2)) == len(i2)


def test_radius_and_reciprocity_near_the_pole_and_ra_wrap():
    # across ra = 0/360 and at the pole, distances are angular, not in ra/dec
    i1, i2, sep = crossmatch.match([359.99999], [0.0], [0.00001], [0.0], 1.0)
    assert (i1.tolist(), i2.tolist()) == ([0], [0]) and sep[0] == pytest.approx(0.072, abs=1e-3)
    i1, _, _ = crossmatch.match([0.0], [89.99999], [180.0], [89.99999], 1.0)
    assert len(i1) == 1  # 0.072" apart across the pole
    # B is A's nearest, but A2 is closer to B: only (A2, B) is reciprocal
    i1, i2, _ = crossmatch.match([10.0, 10.0 + 0.3 / 3600], [0.0, 0.0], [10.0 + 0.5 / 3600], [0.0], 1.0)
    assert (i1.tolist(), i2.tolist()) == ([1], [0])
    i1, _, _ = crossmatch.match([10.0], [0.0], [10.0 + 1.5 / 3600], [0.0], 1.0)
    assert len(i1) == 0
    with pytest.raises(ValueError, match="radius_arcsec"):
        crossmatch.match([1.0], [1.0], [1.0], [1.0], 0)


def test_merge_folds_lists_in_priority_order():
    a = (np.array([10.0, 20.0]), np.array([0.0, 0.0]))
    b = (np.array([20.0 + 0.2 / 3600, 30.0]), np.array([0.0, 0.0]))
    c = (np.array([10.0 - 0.3 / 3600, 30.0 + 0.1 / 3600, 40.0]), np.array([0.0, 0.0, 0.0]))
    g = crossmatch.merge([a, b, c], 1.0)
    assert g.n == 4
    assert g.row_of[0].tolist() == [0, 1]
    assert g.row_of[1].tolist() == [1, 2]
    assert g.row_of[2].tolist() == [0, 2, 3]
    assert g.ra.tolist() == [10.0, 20.0, 30.0, 40.0]  # each row sits at its first member
    # the order inside a list does not change which objects are joined
    c_rev = (c[0][::-1].copy(), c[1][::-1].copy())
    g2 = crossmatch.merge([a, b, c_rev], 1.0)
    assert g2.row_of[2][::-1].tolist() == g.row_of[2].tolist()
