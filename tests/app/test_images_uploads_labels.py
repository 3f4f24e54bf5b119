"""Composites, sky mosaics, upload validation, result export and the labels database."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from app import images, search, uploads
from app.labels import LabelStore
from app.messages import AppMessage


def test_lupton_and_band_images():
    cube = np.zeros((4, 32, 32), np.float32)
    cube[:, 16, 16] = [1, 2, 3, 4]
    rgb = images.lupton_rgb(cube, "image_ls")
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert rgb[16, 16, 0] >= rgb[16, 16, 2] and rgb[0, 0].sum() == 0  # z (red) brightest; empty sky black
    band = images.band_image(cube, 3)
    assert band.max() <= 1 and band[16, 16] == band.max()
    with pytest.raises(ValueError, match="stretch must be > 0"):
        images.lupton_rgb(cube, stretch=0)
    png = images.png_bytes(rgb, 16)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_sky_mosaic_places_tiles_east_left():
    tile = np.zeros((8, 8, 3), np.uint8)
    tile[:, :] = 200
    canvas = images.sky_mosaic([(10.0, 5.0, tile, 96)], (9.0, 11.0), (4.0, 6.0), width_px=200, aspect=1.0)
    assert canvas.shape == (200, 200, 4)
    ys, xs = np.nonzero(canvas[..., 3])
    assert abs(xs.mean() - 100) < 2 and abs(ys.mean() - 100) < 2  # centred on its position
    empty = images.sky_mosaic([], (9.0, 11.0), (4.0, 6.0))
    assert empty[..., 3].sum() == 0


def _fits_image(shape=(4, 64, 64)) -> bytes:
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(np.random.default_rng(0).random(shape).astype(np.float32))]).writeto(buf)
    return buf.getvalue()


def _fits_spectrum() -> bytes:
    cols = [fits.Column("wavelength", "E", array=np.linspace(3600, 9800, 50)), fits.Column("flux", "E", array=np.ones(50))]
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(buf)
    return buf.getvalue()


def test_upload_validation_writes_only_to_a_temp_folder():
    path, kind = uploads.validate_upload("../../etc/cut out.fits", _fits_image(), 10_000_000)
    assert kind == "image" and path.name == "cut_out.fits" and "aion-upload-" in str(path.parent)
    assert path.read_bytes()[:6] == b"SIMPLE"
    assert uploads.validate_upload("spec.fits", _fits_spectrum(), 10_000_000)[1] == "spectrum"
    with pytest.raises(AppMessage, match=r"'big.fits' is .* limited to 1 MB"):
        uploads.validate_upload("big.fits", b"0" * 2_000_000, 1_000_000)
    with pytest.raises(AppMessage, match=r"'x.png' is not a FITS file; accepted extensions"):
        uploads.validate_upload("x.png", b"abc", 1_000_000)
    with pytest.raises(AppMessage, match=r"'broken.fits' is not a valid FITS file"):
        uploads.validate_upload("broken.fits", b"this is not fits at all" * 100, 1_000_000)
    with pytest.raises(AppMessage, match="holds no usable data"):
        uploads.validate_upload("tiny.fits", _fits_image((4, 4)), 1_000_000)


def test_export_csv_and_votable_round_trip():
    from astropy.io.votable import parse_single_table

    hits = pd.DataFrame({"rank": [1, 2], "object_id": [7, 9], "score": [0.9, 0.8], "ra": [150.0, 150.1],
                         "dec": [2.0, 2.1], "kind": ["galaxy", "star"]})
    csv = pd.read_csv(io.BytesIO(search.to_csv(hits)))
    assert csv["object_id"].tolist() == [7, 9]
    table = parse_single_table(io.BytesIO(search.to_votable(hits, "object 5"))).to_table()
    assert table["object_id"].tolist() == [7, 9] and str(table["ra"].unit) == "deg"


def test_labels_saved_updated_and_exported(tmp_path):
    store = LabelStore(tmp_path / "sub" / "labels.sqlite")
    assert store.get("ds", 1) is None
    store.save("ds", 1, "good", "spiral", "nice arms")
    store.save("ds", 1, "blend", "merger", "two nuclei")  # update, not a second row
    store.save("other", 1, "good", "star")
    assert store.get("ds", 1) == {"quality": "blend", "class": "merger", "comment": "two nuclei"}
    frame = pd.read_csv(io.BytesIO(LabelStore(tmp_path / "sub" / "labels.sqlite").to_csv("ds")))
    assert frame[["object_id", "quality", "class"]].values.tolist() == [[1, "blend", "merger"]]
    with pytest.raises(ValueError, match="quality 'great' not accepted; accepted: unset, good"):
        store.save("ds", 2, "great", "spiral")


def test_screenshot_helpers_pick_a_full_object_and_shrink_pngs(tiny_mock, tmp_path):
    from PIL import Image

    from app import screenshots

    oid = screenshots.pick_object(tiny_mock)
    row = pd.read_parquet(tiny_mock / "catalog.parquet").set_index("object_id").loc[oid]
    assert row["has_image_ls"] and row["has_segmap"] and row["has_spectrum_desi"]
    big = images.png_bytes(np.random.default_rng(0).integers(0, 255, (300, 1300, 3), dtype=np.uint8))
    small = Image.open(io.BytesIO(screenshots.small_png(big, 650)))
    assert small.size == (650, 150)
    assert screenshots.main(["--dataset", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
