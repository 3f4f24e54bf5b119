"""Save and load model folders in the official Hugging Face layout.

A model folder is ``config.json`` + ``model.safetensors`` (an ``aion.AION`` that
``aion.AION.from_pretrained(dir, strict=True)`` accepts) + ``codecs/<modality>/...`` +
``engine.json`` (the engine's own metadata: preset, training provenance; optional, so the
published ``polymathic-ai/aion-base`` folder loads too). Only JSON and safetensors are read.

Writes are atomic: the folder is built under a temporary sibling name and renamed into place,
so a crash never leaves a half model and an existing model is replaced only by a complete one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.errors import ModelError
from engine.model.codecs import CODECS_DIR, CodecSet
from engine.model.modalities import ALL_MODALITIES
from engine.model.presets import ModelPreset, get_preset
from engine.paths import model_id_of

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "engine.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_REQUIRED_CONFIG_KEYS = ("domains_in", "domains_out", "dim", "encoder_depth", "decoder_depth", "num_heads")
HASH_CHARS = 16


@dataclass
class LoadedModel:
    """A model ready for inference: transformer (eval mode), its codecs, and identity."""

    model: Any  # aion.AION
    codecs: CodecSet
    config: dict
    model_id: str
    hash: str
    path: Path | None = None
    meta: dict = field(default_factory=dict)

    @property
    def token_keys(self) -> tuple[str, ...]:
        """Token keys the encoder accepts (``domains_in``)."""
        return tuple(self.config["domains_in"])

    @property
    def dim(self) -> int:
        return int(self.config["dim"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def build_model(
    preset: ModelPreset | str, token_keys: Iterable[str], target_keys: Iterable[str] | None = None
):
    """A fresh ``aion.AION`` at the preset's shape over ``token_keys`` (inputs; outputs default to the same)."""
    from aion import AION

    if isinstance(preset, str):
        preset = get_preset(preset)
    keys = _check_keys(token_keys, "token_keys")
    targets = _check_keys(target_keys, "target_keys") if target_keys is not None else keys
    return AION(preset.transformer_config(keys, targets))


def _check_keys(keys: Iterable[str], what: str) -> list[str]:
    keys = list(dict.fromkeys(keys))
    unknown = [k for k in keys if k not in ALL_MODALITIES]
    if unknown:
        raise ModelError(f"{what}: unknown token key(s) {unknown}; accepted: {', '.join(ALL_MODALITIES)}")
    if not keys:
        raise ModelError(f"{what}: empty; give at least one of {', '.join(ALL_MODALITIES)}")
    return keys


# --- saving ----------------------------------------------------------------------------


def save_model(
    model_dir: str | os.PathLike, model, codecs: CodecSet, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model`` + ``codecs`` + ``meta`` as a model folder at ``model_dir`` (atomically).

    Raises ModelError if a codec is missing for one of the model's input or output modalities.
    """
    out = Path(model_dir)
    config = dict(model._hub_mixin_config)
    needed = set(config["domains_in"]) | set(config["domains_out"])
    lacking = sorted(k for k in needed if k not in codecs and ALL_MODALITIES[k].kind != "unmapped")
    if lacking:
        raise ModelError(f"{out}: cannot save, no codec for {lacking} (the model uses them)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp)
        codecs.save(tmp)
        full_meta = {"format": "aion-explorer-model", "format_version": 1, **dict(meta or {})}
        full_meta.setdefault("token_keys", list(config["domains_in"]))
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True, default=_json_default))
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# --- loading ---------------------------------------------------------------------------


def resolve_model_dir(path_or_hub_id: str | os.PathLike) -> Path:
    """A local model folder for ``path_or_hub_id``: the folder itself, or a hub snapshot.

    Raises ModelError naming the path when a local folder is missing, or saying the hub cannot
    be reached (and how to pass a local folder) when a hub id cannot be fetched.
    """
    path = Path(path_or_hub_id)
    if path.exists():
        if not path.is_dir():
            raise ModelError(
                f"{path}: not a folder; a model is a folder with config.json, model.safetensors and codecs/"
            )
        return path
    text = str(path_or_hub_id)
    if not _HUB_ID.match(text) or text.startswith((".", "/")):
        raise ModelError(
            f"model folder {text!r} does not exist (pass a model folder or a hub id like 'polymathic-ai/aion-base')"
        )
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            repo_id=text,
            allow_patterns=[
                CONFIG_FILE,
                WEIGHTS_FILE,
                META_FILE,
                f"{CODECS_DIR}/*/{CONFIG_FILE}",
                f"{CODECS_DIR}/*/{WEIGHTS_FILE}",
            ],
        )
    except Exception as exc:  # offline, unknown repo, auth: all end here with one message
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelError(
            f"model {text!r}: no such local folder, and cannot fetch it from the Hugging Face hub "
            f"({type(exc).__name__}: {first_line}); the hub cannot be reached from here or the repo does not "
            f"exist: download it elsewhere and pass the local folder (config.json + model.safetensors + "
            f"codecs/) instead, e.g. --model ./models/aion-base"
        ) from exc
    return Path(local)


def file_hash(path: Path, chars: int = HASH_CHARS) -> str:
    """sha256 of a file, truncated: the model's identity in index manifests.

    Memoised per (path, size, mtime) in this process: staleness checks call it often and a
    published model's weights are ~1 GB.
    """
    st = Path(path).stat()
    return _file_hash(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)[:chars]


@functools.lru_cache(maxsize=64)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_config(model_dir: Path) -> dict:
    """The transformer config of a model folder, validated (errors name the file and key)."""
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise ModelError(f"{path}: missing (a model folder needs config.json, model.safetensors and codecs/)")
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(config).__name__}")
    missing = [k for k in _REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise ModelError(
            f"{path}: missing key(s) {missing}; an aion.AION config needs {list(_REQUIRED_CONFIG_KEYS)}"
        )
    for key in ("domains_in", "domains_out"):
        unknown = [k for k in config[key] if k not in ALL_MODALITIES]
        if unknown:
            raise ModelError(
                f"{path}: field {key!r} has unsupported token key(s) {unknown}; accepted: {', '.join(ALL_MODALITIES)}"
            )
    return config


def load_transformer(model_dir: Path, config: dict | None = None, device: str | torch.device = "cpu"):
    """``aion.AION`` from a model folder, weights loaded strictly from safetensors, eval mode."""
    from aion import AION
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_safetensors_model

    config = config if config is not None else read_config(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(
            f"{weights}: missing (a model folder needs config.json, model.safetensors and codecs/)"
        )
    try:
        model = AION(config)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ModelError(f"{model_dir / CONFIG_FILE}: config does not build an aion.AION ({exc})") from exc
    try:
        load_safetensors_model(model, str(weights), strict=True, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{weights}: cannot read safetensors ({exc})") from exc
    except RuntimeError as exc:
        raise ModelError(
            f"{weights}: weights do not match {model_dir / CONFIG_FILE}: {str(exc)[:500]}"
        ) from exc
    return model.to(device).eval()


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; a clear error when it names a GPU this machine lacks."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"unknown device {device!r}; accepted: 'cpu', 'cuda', 'cuda:N'") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(
                f"device {str(device)!r} requested but this machine has no CUDA GPU; use device 'cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"device {str(device)!r}: only {torch.cuda.device_count()} GPU(s) here")
    elif dev.type != "cpu":
        raise ModelError(f"device {str(device)!r} is not supported; accepted: 'cpu', 'cuda', 'cuda:N'")
    return dev


def load_model(path_or_hub_id: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model folder (or hub id) strictly: transformer + the codecs of every modality it uses."""
    device = check_device(device)
    root = resolve_model_dir(path_or_hub_id)
    config = read_config(root)
    model = load_transformer(root, config, device)
    keys = list(dict.fromkeys([*config["domains_in"], *config["domains_out"]]))
    # modalities no dataset field feeds (the published models' source catalog and segmentation
    # map) load their codec when it is there; every other codec is required
    keys = [
        k
        for k in keys
        if ALL_MODALITIES[k].kind != "unmapped" or (root / CODECS_DIR / ALL_MODALITIES[k].codec_name).is_dir()
    ]
    codecs = CodecSet.load(root, keys, device=str(device))
    meta_path = root / META_FILE
    meta: dict = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as exc:
            raise ModelError(f"{meta_path}: not valid JSON ({exc})") from exc
    model_id = model_id_of(path_or_hub_id)
    return LoadedModel(
        model=model,
        codecs=codecs,
        config=config,
        model_id=model_id,
        hash=file_hash(root / WEIGHTS_FILE),
        path=root,
        meta=meta,
    )
