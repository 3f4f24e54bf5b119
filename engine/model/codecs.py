"""A set of official AION codecs, one per token key, saved and loaded in the hub layout.

Codecs live in a model folder as ``codecs/<modality-name>/{config.json, model.safetensors}``
(the layout of ``polymathic-ai/aion-base``). The modality name is shared: one ``image`` codec
serves Legacy Survey and HSC images, one ``spectrum`` codec serves DESI and SDSS spectra.

Workarounds for ``polymathic-aion`` 0.0.2: ``from_pretrained`` cannot load a local codec
folder, so :meth:`CodecSet.load` builds the class from ``config.json`` and loads
``model.safetensors`` strictly; ``ImageCodec`` clamps its input in place, so images are copied
before encoding; decoding HSC images crashes in 0.0.2 (``_reverse_zeropoint``), so the image
decode path is reproduced here with the correct zero-point rescaling.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from aion import codecs as ac
from aion import modalities as am
from aion.codecs.config import MODALITY_CODEC_MAPPING
from aion.codecs.preprocessing.band_to_index import BAND_TO_INDEX

from engine.errors import ModelError
from engine.model.modalities import ALL_MODALITIES, spec
from engine.model.presets import SCALAR_CODEBOOK_SIZE, ModelPreset

CODECS_DIR = "codecs"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# Gaia XP coefficients span orders of magnitude and change sign: arcsinh before the quantile table.
_XP_COMPRESSION = {"compression_fns": ["arcsinh"], "decompression_fns": ["sinh"]}
_CODEC_CLASSES = {
    cls.__name__: cls
    for cls in (
        ac.ImageCodec,
        ac.SpectrumCodec,
        ac.ScalarCodec,
        ac.LogScalarCodec,
        ac.MultiScalarCodec,
        ac.GridScalarCodec,
    )
}


def codec_class_for(token_key: str) -> type:
    """The official codec class for a token key (``aion.codecs.config.MODALITY_CODEC_MAPPING``)."""
    return MODALITY_CODEC_MAPPING[spec(token_key).modality]


def _codec_modality_type(codec_name: str) -> type:
    """The modality class the official mixin files a codec under (``Image``/``Spectrum`` for shared codecs)."""
    if codec_name == am.Image.name:
        return am.Image
    if codec_name == am.Spectrum.name:
        return am.Spectrum
    for cls in (am.LegacySurveyCatalog, am.LegacySurveySegmentationMap):
        if codec_name == cls.name:
            return cls
    try:
        return am.ScalarModalities[codec_name]
    except KeyError:
        raise ModelError(f"unknown codec folder name {codec_name!r}") from None


def new_codec(token_key: str, preset: ModelPreset) -> torch.nn.Module:
    """A fresh (untrained) official codec for ``token_key`` at the preset's sizes."""
    sp = spec(token_key)
    if sp.kind == "unmapped":
        raise ModelError(f"no codec can be trained for {token_key!r}: no dataset field feeds it")
    cls = codec_class_for(token_key)
    if cls is ac.ImageCodec:
        return ac.ImageCodec(**preset.image_codec_config())
    if cls is ac.SpectrumCodec:
        return ac.SpectrumCodec(**preset.spectrum_codec_config())
    name = sp.modality.name
    if cls is ac.MultiScalarCodec:
        return ac.MultiScalarCodec(
            modality=name,
            codebook_size=SCALAR_CODEBOOK_SIZE,
            reservoir_size=preset.scalar_reservoir_size,
            num_quantizers=sp.num_tokens,
            **_XP_COMPRESSION,
        )
    if cls is ac.GridScalarCodec:
        return ac.GridScalarCodec(modality=name, codebook_size=SCALAR_CODEBOOK_SIZE)
    return cls(modality=name, codebook_size=SCALAR_CODEBOOK_SIZE, reservoir_size=preset.scalar_reservoir_size)


class CodecSet:
    """One official codec per token key (shared instances where the hub layout shares a folder)."""

    def __init__(self, codecs: Mapping[str, torch.nn.Module], configs: Mapping[str, dict] | None = None):
        unknown = [k for k in codecs if k not in ALL_MODALITIES]
        if unknown:
            raise ModelError(f"unknown token key(s) {unknown}; accepted: {', '.join(ALL_MODALITIES)}")
        self.codecs: dict[str, torch.nn.Module] = dict(codecs)
        #: constructor kwargs per codec folder name (what config.json holds)
        self.configs: dict[str, dict] = dict(configs or {})

    # --- construction ---------------------------------------------------------------

    @classmethod
    def build(cls, preset: ModelPreset, token_keys: Iterable[str]) -> CodecSet:
        return build_codecs(preset, token_keys)

    @property
    def token_keys(self) -> tuple[str, ...]:
        return tuple(self.codecs)

    def __contains__(self, token_key: str) -> bool:
        return token_key in self.codecs

    def __getitem__(self, token_key: str) -> torch.nn.Module:
        try:
            return self.codecs[token_key]
        except KeyError:
            raise ModelError(f"no codec for {token_key!r}; this codec set has {list(self.codecs)}") from None

    def by_folder(self) -> dict[str, torch.nn.Module]:
        """Codec folder name -> codec (each shared codec once)."""
        out: dict[str, torch.nn.Module] = {}
        for key, codec in self.codecs.items():
            out.setdefault(spec(key).codec_name, codec)
        return out

    def to(self, device: torch.device | str) -> CodecSet:
        for codec in self.by_folder().values():
            codec.to(device)
        return self

    def eval(self) -> CodecSet:
        for codec in self.by_folder().values():
            codec.eval()
        return self

    def parameters(self):
        for codec in self.by_folder().values():
            yield from codec.parameters()

    @property
    def device(self) -> torch.device:
        for codec in self.by_folder().values():
            for t in (*codec.parameters(), *codec.buffers()):
                return t.device
        return torch.device("cpu")

    # --- encode / decode -------------------------------------------------------------

    @torch.inference_mode()
    def encode(
        self,
        modalities: Mapping[str, am.Modality | tuple[am.Modality, object]],
        dtype: torch.dtype | None = None,
    ) -> dict[str, torch.Tensor]:
        """Token ids per key: ``{token_key: LongTensor (B, num_tokens)}``.

        Accepts modality objects or the ``(modality, present)`` pairs of ``load_modalities``
        (the mask is ignored here: every row is encoded). ``dtype=torch.bfloat16`` runs the
        image/spectrum networks under autocast but quantizes in fp32 (FSQ code arithmetic in
        bf16 would corrupt indices above 256); ids can then differ from fp32 near bin edges.
        """
        out: dict[str, torch.Tensor] = {}
        device = self.device
        for key, value in modalities.items():
            modality = value[0] if isinstance(value, tuple) else value
            codec = self[key]
            modality = _to_device(modality, device)
            if isinstance(modality, am.Image):  # ImageCodec clamps its input in place
                modality = dataclasses.replace(modality, flux=modality.flux.clone())
            if dtype is not None and dtype != torch.float32 and spec(key).kind in ("image", "spectrum"):
                tokens = _encode_mixed(codec, modality, device, dtype)
            else:
                tokens = codec.encode(modality)
            if tokens.dim() == 1:
                tokens = tokens[:, None]
            expected = spec(key).num_tokens
            if tokens.shape[1] != expected:
                raise ModelError(
                    f"codec for {key!r} made {tokens.shape[1]} tokens per object; the model expects {expected} "
                    "(check the codec's compression / grid settings)"
                )
            out[key] = tokens.long()
        return out

    @torch.inference_mode()
    def decode(self, token_key: str, tokens: torch.Tensor, **ctx) -> am.Modality:
        """Decode token ids back to a modality of ``token_key``'s class.

        ``ctx``: ``bands`` for images (default: the survey's bands), ``wavelength`` (B, L) for
        spectra (default: the codec's latent grid).
        """
        sp = spec(token_key)
        codec = self[token_key]
        tokens = tokens.to(self.device)
        if sp.kind == "image":
            bands = list(ctx.get("bands") or sp.bands)
            flux = _decode_image(codec, tokens, bands)
            return sp.modality(flux=flux, bands=bands)
        if sp.kind == "spectrum":
            wavelength = ctx.get("wavelength")
            if wavelength is not None:
                wavelength = torch.as_tensor(wavelength, dtype=torch.float32, device=self.device)
            s = codec.decode(tokens, wavelength=wavelength)
            return sp.modality(flux=s.flux, ivar=s.ivar, mask=s.mask, wavelength=s.wavelength)
        if sp.kind == "scalar" and tokens.dim() == 2:
            tokens = tokens[:, 0]
        decoded = codec.decode(tokens)
        return sp.modality(value=decoded.value)

    # --- persistence -----------------------------------------------------------------

    def save(self, model_dir: str | os.PathLike) -> None:
        """Write ``model_dir/codecs/<name>/{config.json, model.safetensors}`` (official layout).

        Each codec folder is written under a temporary name and renamed into place, so a crash
        never leaves a codec with new weights and an old config (or half a file).
        """
        from safetensors.torch import save_file

        root = Path(model_dir) / CODECS_DIR
        root.mkdir(parents=True, exist_ok=True)
        for name, codec in self.by_folder().items():
            tmp = root / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                config = self.configs.get(name) or _config_of(codec)
                state = {k: v.detach().to("cpu").contiguous() for k, v in codec.state_dict().items()}
                save_file(_dedupe_shared(state), str(tmp / WEIGHTS_FILE))
                (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
                _replace_folder(tmp, root / name)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

    @classmethod
    def load(
        cls,
        model_dir_or_hub_id: str | os.PathLike,
        token_keys: Iterable[str] | None = None,
        device: str = "cpu",
    ) -> CodecSet:
        """Load the codecs of ``token_keys`` (default: every codec folder present) strictly.

        A hub id is fetched with ``huggingface_hub`` first (see :func:`engine.model.loading.resolve_model_dir`).
        """
        from engine.model.loading import resolve_model_dir

        root = resolve_model_dir(model_dir_or_hub_id)
        codec_root = root / CODECS_DIR
        if token_keys is None:
            if not codec_root.is_dir():
                raise ModelError(
                    f"{codec_root}: missing codecs folder (expected codecs/<modality>/config.json)"
                )
            folders = {p.name for p in codec_root.iterdir() if (p / CONFIG_FILE).is_file()}
            token_keys = [k for k, s in ALL_MODALITIES.items() if s.codec_name in folders]
        loaded: dict[str, torch.nn.Module] = {}
        configs: dict[str, dict] = {}
        codecs: dict[str, torch.nn.Module] = {}
        for key in token_keys:
            name = spec(key).codec_name
            if name not in loaded:
                loaded[name], configs[name] = load_codec_folder(codec_root / name, key)
            codecs[key] = loaded[name]
        return cls(codecs, configs).to(device).eval()


def _replace_folder(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing an existing folder only once ``new`` is complete."""
    for path in new.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_codecs(preset: ModelPreset, token_keys: Iterable[str]) -> CodecSet:
    """Fresh codecs at the preset's sizes, one per key (the image and spectrum codecs shared)."""
    made: dict[str, torch.nn.Module] = {}
    configs: dict[str, dict] = {}
    codecs: dict[str, torch.nn.Module] = {}
    for key in token_keys:
        name = spec(key).codec_name
        if name not in made:
            made[name] = new_codec(key, preset)
            configs[name] = _config_of(made[name])
        codecs[key] = made[name]
    return CodecSet(codecs, configs)


def load_codec_folder(folder: Path, token_key: str) -> tuple[torch.nn.Module, dict]:
    """Build a codec from ``folder/config.json`` and load ``folder/model.safetensors`` strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ModelError(
                f"{path}: missing (codec for {token_key!r}; expected codecs/<modality>/{{config.json, model.safetensors}})"
            )
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise ModelError(f"{config_path}: not valid JSON ({exc})") from exc
    cls = codec_class_for(token_key)
    try:
        codec = cls(**config)
    except TypeError as exc:
        raise ModelError(f"{config_path}: config does not fit {cls.__name__} ({exc})") from exc
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{weights_path}: cannot read safetensors ({exc})") from exc
    own = codec.state_dict()
    state = _restore_shared(state, own)
    try:
        codec.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"{weights_path}: weights do not match {cls.__name__}({config_path.name}): {exc}"
        ) from exc
    codec._modality = _codec_modality_type(folder.name)
    return codec.eval(), config


def _config_of(codec: torch.nn.Module) -> dict:
    """Constructor kwargs the hub mixin recorded (``_hub_mixin_config``), JSON-safe."""
    config = getattr(codec, "_hub_mixin_config", None)
    if config is None:
        raise ModelError(
            f"{type(codec).__name__} has no recorded constructor config; build it via build_codecs()"
        )
    return json.loads(json.dumps(dict(config), default=list))


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory: keep the first name of each storage."""
    seen: dict[tuple, str] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        key = (
            (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
            if t.numel()
            else None
        )
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = name
        out[name] = t.clone() if key is None else t
    return out


def _restore_shared(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Re-add tensors dropped by :func:`_dedupe_shared` (aliases in the fresh module)."""
    missing = [k for k in own if k not in state]
    if not missing:
        return state
    ptr_to_name: dict[tuple, str] = {}
    for name, t in own.items():
        if t.numel():
            ptr_to_name.setdefault((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)), name)
    state = dict(state)
    for name in missing:
        t = own[name]
        if not t.numel():
            continue
        alias = ptr_to_name.get((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)))
        if alias is not None and alias in state and alias != name:
            state[name] = state[alias]
    return state


def _to_device(modality: am.Modality, device: torch.device) -> am.Modality:
    changes = {
        f.name: getattr(modality, f.name).to(device)
        for f in dataclasses.fields(modality)
        if isinstance(getattr(modality, f.name), torch.Tensor) and getattr(modality, f.name).device != device
    }
    return dataclasses.replace(modality, **changes) if changes else modality


def _encode_mixed(codec, modality: am.Modality, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The official ``encode`` with the network under autocast and the quantizers in fp32."""
    with torch.autocast(device_type=device.type, dtype=dtype):
        latent = codec._encode(modality)
    if isinstance(latent, tuple):  # SpectrumCodec: (latent, normalization) + a normalization token
        latent, normalization = latent
        codes = codec.quantizer.encode(latent.float())
        norm_code = codec.normalization_quantizer.encode(normalization.float())
        return torch.cat([norm_code[..., None], codes], dim=-1)
    return codec.quantizer.encode(latent.float())


def _decode_image(codec: torch.nn.Module, tokens: torch.Tensor, bands: list[str]) -> torch.Tensor:
    """``AutoencoderImageCodec._decode`` with the HSC zero-point fix (0.0.2 calls a missing method)."""
    unknown = [b for b in bands if b not in BAND_TO_INDEX]
    if unknown:
        raise ModelError(f"unknown image band(s) {unknown}; accepted: {list(BAND_TO_INDEX)}")
    z = codec.quantizer.decode(tokens)
    batch, embedding_dim, n_tokens = z.shape
    side = int(round(n_tokens**0.5))
    z = z.reshape(batch, embedding_dim, side, side)
    h = codec.post_quant_proj(z)
    raw = codec.decoder(h)
    channel_mask = torch.ones((batch, codec.image_padder.nbands), device=z.device, dtype=torch.bool)
    padded = codec.subsample_out(raw, channel_mask)
    flux = codec._reverse_range_compress(padded)
    flux = codec.image_padder.backward(flux, bands)
    if bands[0].split("-")[0] == "HSC":
        flux = flux * codec.rescaler.convert_zeropoint(27.0)
    return flux


def fill_quantile_table(codec: torch.nn.Module, values: torch.Tensor) -> bool:
    """Stream finite ``values`` ((B,) scalars or (B, C) XP coefficients) into a scalar codec's
    reservoir and rebuild its quantile table. Returns False for codecs without a table (fixed
    grids such as redshift's ``GridScalarCodec``, and non-scalar codecs)."""
    quantizer = getattr(codec, "quantizer", None)
    if not hasattr(quantizer, "_update_reservoirs"):
        return False
    values = torch.as_tensor(values, dtype=torch.float32).to(codec.quantizer.codebook.device)
    finite = torch.isfinite(values) if values.dim() == 1 else torch.isfinite(values).all(dim=1)
    values = values[finite]
    if len(values):
        quantizer._update_reservoirs(values)
    return True
