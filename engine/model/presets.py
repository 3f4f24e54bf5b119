"""Named model sizes: transformer hyper-parameters plus codec sizes, one dataclass each.

``base`` and ``large`` are the published AION-1 shapes (the official ``aion`` factory
functions ``fm_base_12e_12d_swiglu_qknorm_nobias`` / ``fm_large_24e_24d_swiglu_qknorm_nobias``:
SwiGLU, QK-norm, no biases) with the published codec sizes (image codec 512 hidden,
spectrum codec ConvNeXt 96-512: 70 M and 24.5 M parameters). ``nano`` is sized to train on 2 CPU cores in well under an
hour and ship in the repository (model folder <= 25 MB); ``small`` sits between.

Token counts and vocabularies are fixed by the official modality registry (576 image tokens
of vocab 4375, 273 spectrum tokens of vocab 1024, scalar vocab 1024), so every preset's codecs
keep the quantizer shapes and only change widths and depths.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from engine.errors import ModelError

# Image codec quantizer: FSQ levels whose product is the image vocabulary (7*5^4 = 4375).
IMAGE_QUANTIZER_LEVELS: tuple[int, ...] = (7, 5, 5, 5, 5)
SPECTRUM_CODEBOOK_SIZE = 1024  # LFQ codebook = 2**10, so the LFQ dim is 10
SPECTRUM_LFQ_DIM = 10
SCALAR_CODEBOOK_SIZE = 1024


@dataclass(frozen=True)
class ModelPreset:
    """Everything needed to build a fresh transformer and its codecs at one size.

    The transformer fields are exactly the keys of the official ``aion.AION`` config (minus
    ``domains_in`` / ``domains_out``, which come from the modalities trained on).
    """

    name: str
    # transformer (aion.AION config keys)
    dim: int
    encoder_depth: int
    decoder_depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    proj_bias: bool = False
    mlp_bias: bool = False
    norm_bias: bool = False
    act_layer: str = "SiLU"
    gated_mlp: bool = True
    qk_norm: bool = True
    # image codec (aion.codecs.ImageCodec)
    image_hidden_dims: int = 512
    image_multisurvey_projection_dims: int = 54
    image_num_consecutive: int = 4
    image_n_compressions: int = 2  # 96 px / 2**2 = 24 x 24 = 576 tokens: fixed by the registry
    image_quantizer_levels: tuple[int, ...] = IMAGE_QUANTIZER_LEVELS
    # spectrum codec (aion.codecs.SpectrumCodec); 4 stages: 8704 px / 32 = 272 codes + 1 norm token
    spectrum_encoder_depths: tuple[int, ...] = (3, 3, 9, 3)
    # (96, 192, 384, 512) with 512 latent channels gives the published 24.5 M-parameter codec
    # (the package default 768 fails its own latent_channels assertion)
    spectrum_encoder_dims: tuple[int, ...] = (96, 192, 384, 512)
    spectrum_decoder_depths: tuple[int, ...] = (3, 3, 9, 3)
    spectrum_decoder_dims: tuple[int, ...] = (384, 192, 96, 1)
    # scalar codecs (quantile tables)
    scalar_reservoir_size: int = 100_000
    # masked-modeling token budgets (training defaults; the paper uses 256 in / 128 out)
    input_tokens: int = 256
    target_tokens: int = 128
    #: default modalities for this size (None: every modality the dataset has). The nano set
    #: keeps the model folder under 25 MB: each token key costs 3 x vocab x dim parameters.
    token_keys: tuple[str, ...] | None = None
    notes: str = field(default="", compare=False)

    @property
    def spectrum_latent_channels(self) -> int:
        return self.spectrum_encoder_dims[-1]

    def transformer_config(self, domains_in: list[str], domains_out: list[str] | None = None) -> dict:
        """The config dict ``aion.AION(config)`` takes (and ``config.json`` stores)."""
        return {
            "domains_in": list(domains_in),
            "domains_out": list(domains_out if domains_out is not None else domains_in),
            "dim": self.dim,
            "encoder_depth": self.encoder_depth,
            "decoder_depth": self.decoder_depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "qkv_bias": self.qkv_bias,
            "proj_bias": self.proj_bias,
            "mlp_bias": self.mlp_bias,
            "norm_bias": self.norm_bias,
            "act_layer": self.act_layer,
            "gated_mlp": self.gated_mlp,
            "qk_norm": self.qk_norm,
        }

    def image_codec_config(self) -> dict:
        """Keyword arguments of ``aion.codecs.ImageCodec``."""
        return {
            "quantizer_levels": list(self.image_quantizer_levels),
            "hidden_dims": self.image_hidden_dims,
            "multisurvey_projection_dims": self.image_multisurvey_projection_dims,
            "n_compressions": self.image_n_compressions,
            "num_consecutive": self.image_num_consecutive,
            "embedding_dim": len(self.image_quantizer_levels),
        }

    def spectrum_codec_config(self) -> dict:
        """Keyword arguments of ``aion.codecs.SpectrumCodec`` (``embedding_dim == dim``: 0.0.2 asserts it)."""
        return {
            "encoder_depths": list(self.spectrum_encoder_depths),
            "encoder_dims": list(self.spectrum_encoder_dims),
            "decoder_depths": list(self.spectrum_decoder_depths),
            "decoder_dims": list(self.spectrum_decoder_dims),
            "latent_channels": self.spectrum_latent_channels,
            "embedding_dim": SPECTRUM_LFQ_DIM,
            "dim": SPECTRUM_LFQ_DIM,
            "codebook_size": SPECTRUM_CODEBOOK_SIZE,
        }

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            name="nano",
            dim=96,  # 128 would put the shipped folder over 25 MB (embedding tables dominate)
            encoder_depth=2,
            decoder_depth=2,
            num_heads=3,
            image_hidden_dims=32,
            image_multisurvey_projection_dims=16,
            image_num_consecutive=1,
            spectrum_encoder_depths=(1, 1, 1, 1),
            spectrum_encoder_dims=(16, 32, 64, 128),
            spectrum_decoder_depths=(1, 1, 1, 1),
            spectrum_decoder_dims=(64, 32, 16, 1),
            scalar_reservoir_size=1024,
            input_tokens=256,
            target_tokens=128,
            token_keys=(
                "tok_image",
                "tok_spectrum_desi",
                "tok_xp_bp",
                "tok_xp_rp",
                "tok_flux_g",
                "tok_flux_r",
                "tok_flux_i",
                "tok_flux_z",
                "tok_flux_w1",
                "tok_flux_w2",
                "tok_z",
            ),
            notes="CPU-trainable (2 cores, < 1 h); ships in assets/ (<= 25 MB folder)",
        ),
        ModelPreset(
            name="small",
            dim=384,
            encoder_depth=6,
            decoder_depth=6,
            num_heads=6,
            image_hidden_dims=128,
            image_multisurvey_projection_dims=32,
            image_num_consecutive=2,
            spectrum_encoder_depths=(2, 2, 4, 2),
            spectrum_encoder_dims=(48, 96, 192, 384),
            spectrum_decoder_depths=(2, 2, 4, 2),
            spectrum_decoder_dims=(192, 96, 48, 1),
            scalar_reservoir_size=50_000,
            notes="one-GPU training in hours",
        ),
        ModelPreset(
            name="base",
            dim=768,
            encoder_depth=12,
            decoder_depth=12,
            num_heads=12,
            notes="published AION-1 Base shape (polymathic-ai/aion-base)",
        ),
        ModelPreset(
            name="large",
            dim=1024,
            encoder_depth=24,
            decoder_depth=24,
            num_heads=16,
            notes="published AION-1 Large shape",
        ),
    )
}


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name``; the error lists the accepted names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(f"unknown model preset {name!r}; accepted: {', '.join(PRESETS)}") from None
