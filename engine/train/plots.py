"""Training report figures: loss curves and example codec reconstructions (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from engine.model.modalities import spec

#: Modalities drawn in the per-modality loss panel (when the model has them).
_CURVE_KEYS = ("tok_image", "tok_spectrum_desi", "tok_z", "tok_flux_g", "tok_flux_w1", "tok_shape_r", "tok_xp_bp",
               "tok_mag_g")


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) < n or n < 2:
        return y
    return np.convolve(y, np.ones(n) / n, mode="valid")


def loss_curve(metrics_jsonl: Path, out_png: Path) -> None:
    """Pretraining loss (all ranks averaged) and the per-modality losses of the logged steps."""
    records = [json.loads(line) for line in Path(metrics_jsonl).read_text().splitlines() if line.strip()]
    if not records:
        return
    steps = np.array([r["step"] for r in records])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(steps, [r["loss"] for r in records], lw=1)
    axes[0].set(xlabel="step", ylabel="masked-modeling loss (mean over modalities)", title="pretraining loss")
    per_mod: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for k, v in r.get("mod_loss", {}).items():
            if v > 0:
                per_mod.setdefault(k, []).append((r["step"], v))
    shown = [k for k in _CURVE_KEYS if k in per_mod] or sorted(per_mod)[:8]
    for k, pts in ((k, per_mod[k]) for k in shown):
        s, v = np.array(pts).T
        n = max(1, len(v) // 30)
        axes[1].plot(s[n - 1 :] if n > 1 and len(v) >= n else s, _smooth(v, n), lw=1, label=k)
    axes[1].set(xlabel="step", ylabel="cross-entropy", title="per modality (smoothed)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def codec_loss_curves(histories: dict[str, list[dict]], out_png: Path) -> None:
    fig, axes = plt.subplots(1, max(1, len(histories)), figsize=(5 * max(1, len(histories)), 3.5), squeeze=False)
    for ax, (name, hist) in zip(axes[0], histories.items(), strict=False):
        y = np.array([h["loss"] for h in hist])
        n = max(1, len(y) // 50)
        ax.plot(np.arange(len(y)), y, lw=0.5, alpha=0.4)
        ax.plot(np.arange(len(y))[n - 1 :], _smooth(y, n), lw=1.5)
        ax.set(xlabel="step", ylabel="loss", title=f"{name} codec training", yscale="symlog")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def codec_report_pngs(dataset, codecs, histories: dict[str, list[dict]], out_dir: Path, n_examples: int = 4) -> None:
    """Loss curves plus original-vs-reconstruction panels for held-out images and spectra."""
    from engine.train import image_codec, spectrum_codec
    from engine.train.codec_training import ids_with

    out_dir = Path(out_dir)
    if histories:
        codec_loss_curves(histories, out_dir / "codec_loss.png")
    keys = list(codecs.token_keys)
    img_key = next((k for k in keys if spec(k).kind == "image" and len(ids_with(dataset, k, heldout=True))), None)
    if img_key:
        ids = ids_with(dataset, img_key, heldout=True)[:n_examples]
        batch = image_codec.read_images(dataset, spec(img_key).source, ids)
        codec = codecs[img_key].cpu().eval()
        recon = image_codec.reconstruct_raw(codec, batch).numpy()
        orig = codec.clamp(batch.flux.clone(), batch.bands).numpy()
        fig, axes = plt.subplots(3, len(ids), figsize=(2.6 * len(ids), 7.5), squeeze=False)
        band = 1 if orig.shape[1] > 1 else 0
        for j in range(len(ids)):
            lo, hi = np.percentile(orig[j, band], [1, 99.5])
            for row, (img, title) in enumerate(((orig[j, band], "data"), (recon[j, band], "tokens → decoded"),
                                                 (orig[j, band] - recon[j, band], "residual"))):
                kw = {"vmin": lo, "vmax": hi} if row < 2 else {"vmin": -(hi - lo) / 4, "vmax": (hi - lo) / 4}
                axes[row, j].imshow(img, origin="lower", cmap="gray_r" if row < 2 else "RdBu", **kw)
                axes[row, j].set_xticks([])
                axes[row, j].set_yticks([])
                axes[row, j].set_title(f"{title}\n{batch.bands[band]} id {ids[j]}" if row == 0 else title, fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "codec_image_examples.png", dpi=80)
        plt.close(fig)
    sp_key = next((k for k in keys if spec(k).kind == "spectrum" and len(ids_with(dataset, k, heldout=True))), None)
    if sp_key:
        ids = ids_with(dataset, sp_key, heldout=True)[:n_examples]
        s = spectrum_codec.read_spectra(dataset, sp_key, ids)
        codec = codecs[sp_key].cpu().eval()
        with torch.no_grad():
            decoded = codec.decode(codec.encode(s), wavelength=s.wavelength)
        fig, axes = plt.subplots(len(ids), 1, figsize=(10, 2.2 * len(ids)), squeeze=False)
        for j in range(len(ids)):
            lam = s.wavelength[j].numpy()
            good = ~s.mask[j].numpy()
            axes[j, 0].plot(lam[good], s.flux[j].numpy()[good], lw=0.4, color="0.5", label="data")
            axes[j, 0].plot(lam, decoded.flux[j].numpy(), lw=0.8, color="C3", label="tokens → decoded")
            axes[j, 0].set_ylabel(f"id {ids[j]}", fontsize=8)
        axes[0, 0].legend(fontsize=8)
        axes[-1, 0].set_xlabel("wavelength [Å]")
        fig.tight_layout()
        fig.savefig(out_dir / "codec_spectrum_examples.png", dpi=80)
        plt.close(fig)
