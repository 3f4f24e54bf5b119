"""Small heads trained on the frozen encoder's token embeddings (the AION-1 probing recipe).

Properties use *attentive pooling* (one learned query per target attends over the tokens of each
modality group: the one-token scalars, the image, the spectrum) followed by a 2-layer MLP: the
paper found mean pooling far worse once spectrum tokens are in the input, because a few tokens
carry the signal; a fixed position code appended to each token lets the pooled vector say where the
attended tokens sit (which wavelengths hold the lines). Morphology reads the image tokens on their
grid with a small conv stack (:class:`SpatialMorphologyProbe`), next to the mean of all tokens: the
paper's masked mean pooling + MLP reached 17.6 % on the mock's ten classes (a global mean loses where
the light is), the radial profile and angular modes per annulus (:class:`RadialMorphologyProbe`,
``engine/model/pooling.py``) ~85 %, the conv stack ~88 % (``docs/tasks.md``). Every head takes ``tokens`` (B, T, D) and ``mask`` (B, T) with
True = absent token (the convention of the ``aion`` encoder masks).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.model.pooling import RINGS, angular_power, radial_profile


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over present tokens; an object with no token gets zeros instead of NaN."""
    keep = (~mask).unsqueeze(-1).to(tokens.dtype)
    return (tokens * keep).sum(1) / keep.sum(1).clamp_min(1.0)


class AttentivePooling(nn.Module):
    """``n_queries`` learned queries, each with ``num_heads`` softmax distributions over the tokens.

    Multi-head attention pooling with the key projection folded into the query (q . W_k x =
    (W_k^T q) . x) and the value projection applied after pooling (pooling is linear): the
    same function class as ``nn.MultiheadAttention`` with a learned query, but per token it
    costs a D x (heads*queries) product instead of two D x D projections - ~10x cheaper on
    860-token inputs, which is what makes probe training take seconds on a CPU.
    """

    def __init__(self, dim: int, n_queries: int = 1, num_heads: int = 4):
        super().__init__()
        self.n_queries, self.num_heads = n_queries, num_heads
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, n_queries * num_heads)
        self.value = nn.Linear(num_heads * dim, dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = tokens
        logits = self.score(self.norm(x))  # (B, T, Q*H); values pool the raw tokens
        empty = mask.all(1)  # an object with no token here pools a zero vector, not NaN
        mask = mask.clone()
        mask[empty, 0] = False
        logits = logits.masked_fill(mask[..., None], float("-inf"))
        weights = logits.softmax(dim=1).masked_fill(empty[:, None, None], 0.0)
        pooled = torch.einsum("bth,btd->bhd", weights, x)  # (B, Q*H, D)
        b, _, d = pooled.shape
        return self.value(pooled.reshape(b, self.n_queries, self.num_heads * d))  # (B, Q, D)


def mlp(dim_in: int, hidden: int, dim_out: int, dropout: float = 0.1) -> nn.Sequential:
    """The 2-layer MLP of the paper's probes."""
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim_out))


def position_code(count: int, channels: int) -> torch.Tensor:
    """A fixed sinusoidal code (count, channels) of a token's place within its modality.

    A square count (the 24 x 24 image grid) is coded by row and column, half the channels each;
    any other (the spectrum's 273 tokens: where along the wavelength axis; the run of photometry
    tokens: which band) by its index. The frequencies run geometrically from one period over the
    whole run to one per two tokens, so both the coarse and the exact place are readable.
    """
    if channels % 4:
        raise ValueError(f"position code channels must be a multiple of 4, got {channels}")
    if count <= 1 or channels == 0:
        return torch.zeros(count, channels)
    side = math.isqrt(count)
    axes = [torch.arange(count) // side, torch.arange(count) % side] if side * side == count else [torch.arange(count)]
    length = side if len(axes) == 2 else count
    n_freq = channels // (2 * len(axes))
    freqs = (length / 2) ** (torch.arange(n_freq) / max(n_freq - 1, 1))  # periods per run: 1 .. length/2
    parts = []
    for axis in axes:
        phase = 2 * math.pi * axis[:, None].double() / length * freqs[None].double()
        parts += [phase.sin(), phase.cos()]
    return torch.cat(parts, dim=1).float()


class PropertyProbe(nn.Module):
    """Attentive pooling + 2-layer MLP per target: independent regressors trained together.

    ``groups`` are token ranges ``(start, stop)`` pooled separately (one query per target each),
    their pooled vectors concatenated before the MLP: a 576-token image and a 273-token spectrum
    then cannot drown the eleven photometry tokens in one softmax (with a single pool over all
    tokens, adding the image *lowered* the redshift R², 0.727 -> 0.672, ``docs/tasks.md``).
    ``None``: one pool over all tokens, the paper's probe.

    ``position_channels`` > 0 (needs ``groups``) appends :func:`position_code` to every token before
    pooling, so the pooled vector also says *where* the attended tokens sit: which wavelengths of the
    spectrum hold the lines a query found (the redshift), which part of the image. The nano encoder's
    last layer keeps little of its position embedding, and the embedding-layer half of the features
    none (``docs/tasks.md``).
    """

    def __init__(self, dim: int, n_targets: int, hidden: int = 256, num_heads: int = 4,
                 groups: tuple[tuple[int, int], ...] | None = None, position_channels: int = 0):
        super().__init__()
        self.groups = tuple((int(a), int(b)) for a, b in groups) if groups is not None else None
        if position_channels and self.groups is None:
            raise ValueError("a position code needs the token groups (where each modality's tokens sit)")
        self.position_channels = int(position_channels)
        if self.position_channels:
            code = torch.cat([position_code(b - a, self.position_channels) for a, b in self.groups])
            self.register_buffer("position", code, persistent=False)  # rebuilt from groups on load
        width = dim + self.position_channels
        n_groups = len(self.groups) if self.groups is not None else 1
        self.pools = nn.ModuleList(AttentivePooling(width, n_targets, num_heads) for _ in range(n_groups))
        self.heads = nn.ModuleList(mlp(n_groups * width, hidden, 1) for _ in range(n_targets))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.position_channels:
            if tokens.shape[1] != len(self.position):
                raise ValueError(f"expected {len(self.position)} tokens (the probe's groups), got {tokens.shape[1]}")
            code = self.position.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([tokens, code], dim=-1)
        ranges = self.groups if self.groups is not None else ((0, tokens.shape[1]),)
        pooled = torch.cat([pool(tokens[:, a:b], mask[:, a:b]) for pool, (a, b) in zip(self.pools, ranges, strict=True)],
                           dim=-1)  # (B, n_targets, n_groups * width)
        return torch.cat([head(pooled[:, i]) for i, head in enumerate(self.heads)], dim=1)  # (B, n_targets)


class MorphologyProbe(nn.Module):
    """Masked mean pooling + 2-layer MLP over the morphology classes (logits)."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 256):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.head = mlp(dim, hidden, n_classes)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(masked_mean(tokens, mask)))


class RadialMorphologyProbe(nn.Module):
    """Where the light sits, blind to the position angle: per annulus of the image tokens their mean
    (the radial profile) and, for ``harmonics`` m, the amplitude of their m-th angular Fourier mode
    after a learned projection to ``proj`` channels; plus the masked mean of all tokens ->
    2-layer MLP.

    ``image_slice`` is where the image tokens sit in the input (the cache layout). The fixed
    features are standardised with a shift and scale fitted once on the training objects
    (:meth:`standardize_on`) and saved with the weights; the learned angular part is LayerNorm'ed.
    Objects without an image have zero image tokens (the canonical layout), so only their mean
    part informs the prediction.
    """

    def __init__(self, dim: int, n_classes: int, image_slice: tuple[int, int], hidden: int = 512,
                 dropout: float = 0.5, harmonics: tuple[int, ...] = (1, 2), proj: int = 32):
        super().__init__()
        self.image_slice = (int(image_slice[0]), int(image_slice[1]))
        self.harmonics = tuple(int(m) for m in harmonics)
        width = (RINGS + 1) * dim
        self.register_buffer("shift", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        angular = RINGS * len(self.harmonics) * proj
        self.proj = nn.Linear(dim, proj) if self.harmonics else None
        self.angular_norm = nn.LayerNorm(angular) if self.harmonics else None
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width + angular, hidden), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def features(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The fixed (not learned) part: annulus means of the image tokens, then the mean of all tokens."""
        a, b = self.image_slice
        return torch.cat([radial_profile(tokens[:, a:b].float()), masked_mean(tokens.float(), mask)], dim=1)

    @torch.no_grad()
    def standardize_on(self, tokens: torch.Tensor, mask: torch.Tensor, chunk: int = 512) -> None:
        feats = torch.cat([self.features(tokens[i : i + chunk], mask[i : i + chunk]) for i in range(0, len(tokens), chunk)])
        self.shift.copy_(feats.mean(0))
        self.scale.copy_(feats.std(0).clamp_min(1e-6) if len(feats) > 1 else torch.ones_like(self.scale))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = (self.features(tokens, mask) - self.shift) / self.scale
        if self.harmonics:
            a, b = self.image_slice
            angular = angular_power(self.proj(tokens[:, a:b].float()), self.harmonics)
            x = torch.cat([x, self.angular_norm(angular)], dim=1)
        return self.head(x)


class SpatialMorphologyProbe(nn.Module):
    """The image tokens on their 24 x 24 grid -> two conv stages, each ending in a stride-2 conv
    (24 -> 12 -> 6) -> mean and max over the grid; beside them the masked mean of all tokens (the
    photometry) -> 2-layer MLP over the classes.

    A spiral, a bar or a merger is a *pattern* over neighbouring tokens; annulus means and two
    angular modes (:class:`RadialMorphologyProbe`) keep where the light is, not its shape. A small
    conv stack reads the pattern, as :class:`SegmentationHead` does, and the pooled map is blind to
    where on the grid it sits. It is trained on all eight dihedral views like the other image heads.
    """

    def __init__(self, dim: int, n_classes: int, image_slice: tuple[int, int], grid: int = 24, width: int = 64,
                 hidden: int = 256, dropout: float = 0.3):
        super().__init__()
        self.image_slice = (int(image_slice[0]), int(image_slice[1]))
        self.grid = int(grid)
        if self.image_slice[1] - self.image_slice[0] != self.grid * self.grid:
            raise ValueError(f"image_slice {self.image_slice} holds {self.image_slice[1] - self.image_slice[0]} tokens, "
                             f"expected {self.grid * self.grid} (a {self.grid} x {self.grid} grid)")
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.proj = nn.Linear(dim, width)
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
        )
        self.context = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(5 * width, hidden), nn.GELU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a, b = self.image_slice
        x = self.proj((tokens[:, a:b].float() - self.shift) / self.scale)  # (B, grid*grid, width)
        x = x.transpose(1, 2).reshape(len(x), -1, self.grid, self.grid)
        x = self.body(x).flatten(2)  # (B, 2 width, (grid/4)^2)
        pooled = torch.cat([x.mean(2), x.amax(2), self.context(masked_mean(tokens.float(), mask))], dim=1)
        return self.head(pooled)

    @torch.no_grad()
    def standardize_on(self, tokens: torch.Tensor, mask: torch.Tensor, chunk: int = 256) -> None:
        """Per-channel shift and scale of the image tokens over the training objects. The two frozen
        layers differ ~20x in scale (embedding ~0.1, last layer ~2): one LayerNorm over both would
        drown the embedding layer, which carries most of the morphology (``docs/tasks.md``)."""
        mean, std = channel_moments(tokens, slice(*self.image_slice), chunk)
        self.shift.copy_(mean)
        self.scale.copy_(std)


@torch.no_grad()
def channel_moments(tokens: torch.Tensor, columns: slice = slice(None), chunk: int = 256
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each feature channel over every object and token in ``columns``,
    in float64 chunks (the token tensors of a few thousand views do not fit twice in memory)."""
    total = torch.zeros(tokens.shape[-1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    n = 0
    for i in range(0, len(tokens), chunk):
        x = tokens[i : i + chunk, columns].double().flatten(0, 1)
        total += x.sum(0)
        squares += (x * x).sum(0)
        n += len(x)
    mean = total / max(n, 1)
    var = (squares / max(n, 1) - mean * mean).clamp_min(0)
    return mean.float(), var.sqrt().clamp_min(1e-6).float()


class SegmentationHead(nn.Module):
    """Frozen image tokens on their 24x24 grid -> conv upsampler -> per-class logits at 96x96.

    Two x2 upsampling stages (24 -> 48 -> 96), each a 3x3 conv + GELU, as the paper's
    "conv upsampler" on the encoder's image tokens. With ``standardize`` each feature channel is
    shifted and scaled by its training-set moments (:meth:`standardize_on`) instead of a LayerNorm
    per token, which lets the small-scale embedding layer through (as in :class:`SpatialMorphologyProbe`).
    """

    def __init__(self, dim: int, n_classes: int, grid: int = 24, width: int = 64, standardize: bool = False):
        super().__init__()
        self.grid = grid
        self.standardize = bool(standardize)
        if self.standardize:
            self.register_buffer("shift", torch.zeros(dim))
            self.register_buffer("scale", torch.ones(dim))
            self.proj = nn.Linear(dim, width)
        else:
            self.proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width))
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(width, width // 2, 3, padding=1),
            nn.GELU(),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(width // 2, width // 2, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width // 2, n_classes, 1),
        )

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        b, t, _ = image_tokens.shape
        if t != self.grid * self.grid:
            raise ValueError(f"expected {self.grid * self.grid} image tokens, got {t}")
        x = image_tokens.float()
        if self.standardize:
            x = (x - self.shift) / self.scale
        x = self.proj(x).transpose(1, 2).reshape(b, -1, self.grid, self.grid)
        return self.body(x)  # (B, n_classes, 4*grid, 4*grid)

    @torch.no_grad()
    def standardize_on(self, image_tokens: torch.Tensor) -> None:
        """Set the per-channel shift and scale from the training galaxies' image tokens."""
        if not self.standardize:
            raise ValueError("standardize_on needs a SegmentationHead built with standardize=True")
        mean, std = channel_moments(image_tokens)
        self.shift.copy_(mean)
        self.scale.copy_(std)
