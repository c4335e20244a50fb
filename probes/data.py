"""Per-token activation rows for probing: :class:`ProbeData` and :func:`collect`.

A probe dataset is a table of *rows*, one per (prompt, position) token, with the activations of
any number of hooks (``features[hook]: [row d]``). Rows carry their alignment keys:

* ``groups[row]``   -- prompt index (0..n_prompts-1),
* ``positions[row]``-- the token's position inside its own (un-padded) prompt, BOS included,
* ``tokens[row]``   -- the token id (used by Hewitt & Liang control tasks),
* ``split_groups[row]`` -- the group used for train/test splits: prompts with *identical token
  sequences* share one split group, so a duplicated prompt can never land on both sides.

Every target (:mod:`probes.targets`) is built from, and checked against, these keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from einops import rearrange
from jaxtyping import Float, Int
from torch import Tensor

from interp.provenance import model_name
from interp.capture import CaptureError, StreamBatch, stream
from probes.errors import LabelAlignmentError, ProbeInputError
from interp.types import Model

__all__ = ["ProbeData", "collect", "default_hooks", "hook_label", "hook_layer"]

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def hook_layer(hook: str) -> int | None:
    """Layer index of ``blocks.{l}.*`` hooks; ``-1`` for embedding hooks; ``None`` otherwise."""
    m = _BLOCK.match(hook)
    if m:
        return int(m.group(1))
    if hook in ("hook_embed", "hook_pos_embed", "embed", "embed.hook_out"):
        return -1
    return None


def hook_label(hook: str) -> str:
    """Short label: ``embed``, ``L3`` (resid_post), ``L3.attn_out`` ..."""
    if hook in ("hook_embed", "embed.hook_out"):
        return "embed"
    m = _BLOCK.match(hook)
    if m:
        rest = m.group(2)
        if rest == "hook_resid_post":
            return f"L{m.group(1)}"
        return f"L{m.group(1)}." + rest.replace("hook_", "")
    return hook


def default_hooks(model: Model, kind: str = "resid_post", *, embed: bool = True) -> list[str]:
    """``["hook_embed", "blocks.0.hook_<kind>", ..., "blocks.{L-1}.hook_<kind>"]``."""
    n_layers = int(model.cfg.n_layers)
    kind = kind if kind.startswith("hook_") or "." in kind else f"hook_{kind}"
    return (["hook_embed"] if embed else []) + [f"blocks.{l}.{kind}" for l in range(n_layers)]


@dataclass
class ProbeData:
    """Activations of several hooks at every token of a prompt set, flattened to rows."""

    features: dict[str, Float[Tensor, "row d"]]
    groups: Int[Tensor, " row"]
    positions: Int[Tensor, " row"]
    tokens: Int[Tensor, " row"]
    prepend_bos: bool
    split_groups: Int[Tensor, " row"] | None = None
    str_tokens: list[list[str]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.groups.shape[0]
        for name, t in (("positions", self.positions), ("tokens", self.tokens)):
            if t.shape[0] != n:
                raise LabelAlignmentError(f"{name} has {t.shape[0]} rows but groups has {n}")
        for hook, f in self.features.items():
            if f.ndim != 2 or f.shape[0] != n:
                raise LabelAlignmentError(
                    f"features[{hook!r}] has shape {tuple(f.shape)}, expected [{n}, d] (one row per token)"
                )
        if self.split_groups is None:
            self.split_groups = _content_groups(self.groups, self.positions, self.tokens)

    # ---- basic properties ----------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return int(self.groups.shape[0])

    @property
    def n_prompts(self) -> int:
        return int(self.groups.max()) + 1 if self.n_rows else 0

    @property
    def hooks(self) -> list[str]:
        return list(self.features)

    @property
    def lengths(self) -> Int[Tensor, " prompt"]:
        return torch.bincount(self.groups, minlength=self.n_prompts)

    def token_lists(self) -> list[Tensor]:
        """Token ids of each prompt (own coordinates)."""
        out = []
        for g in range(self.n_prompts):
            sel = self.groups == g
            order = torch.argsort(self.positions[sel])
            out.append(self.tokens[sel][order])
        return out

    def row_index(self) -> dict[tuple[int, int], int]:
        return {(int(g), int(p)): i for i, (g, p) in enumerate(zip(self.groups.tolist(), self.positions.tolist()))}

    def select(self, mask: Tensor) -> ProbeData:
        """Subset of rows (boolean mask or index tensor); keys are kept, so targets still align."""
        return ProbeData(
            features={k: v[mask] for k, v in self.features.items()},
            groups=self.groups[mask],
            positions=self.positions[mask],
            tokens=self.tokens[mask],
            prepend_bos=self.prepend_bos,
            split_groups=self.split_groups[mask] if self.split_groups is not None else None,
            str_tokens=self.str_tokens,
            meta=dict(self.meta),
        )

    def with_features(self, features: dict[str, Tensor]) -> ProbeData:
        return ProbeData(features, self.groups, self.positions, self.tokens, self.prepend_bos,
                         self.split_groups, self.str_tokens, dict(self.meta))

    def check_finite(self) -> None:
        from probes._models import check_features

        for hook, f in self.features.items():
            check_features(f, name=f"features[{hook!r}]")

    @classmethod
    def from_tensors(
        cls,
        features: dict[str, Tensor] | Tensor,
        *,
        groups: Tensor,
        positions: Tensor | None = None,
        tokens: Tensor | None = None,
        prepend_bos: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> ProbeData:
        """Wrap plain tensors. ``features`` may be one ``[row d]`` tensor (hook name ``"x"``)
        or ``[layer row d]`` (hooks ``"layer0"``..). ``positions`` default to 0..len-1 per group;
        ``tokens`` default to zeros (then control tasks are meaningless and splits group by
        prompt index, since identical prompts cannot be recognised)."""
        if isinstance(features, Tensor):
            if features.ndim == 2:
                features = {"x": features}
            elif features.ndim == 3:
                features = {f"layer{i}": f for i, f in enumerate(features)}
            else:
                raise ProbeInputError(f"features must be [row d] or [layer row d], got {tuple(features.shape)}")
        groups = groups.long()
        if positions is None:
            positions = torch.zeros_like(groups)
            for g in torch.unique(groups):
                sel = groups == g
                positions[sel] = torch.arange(int(sel.sum()))
        split_groups = None
        if tokens is None:  # no token ids: duplicates cannot be detected, split by prompt index
            tokens = torch.zeros_like(groups)
            split_groups = groups
        return cls(dict(features), groups, positions.long(), tokens.long(), prepend_bos,
                   split_groups=split_groups, meta=meta or {})

    @classmethod
    def from_store(cls, store: Any, hooks: Sequence[str] | None = None, *, dtype: Any = None) -> ProbeData:
        """``ProbeData`` from an ``interp.capture.ActivationStore`` (``[pos ...]`` hooks only;
        trailing dims are flattened, e.g. ``hook_z`` becomes ``[row head*d_head]``)."""
        names = list(hooks) if hooks is not None else [h for h in store.hooks if store.layout(h) == "pos"]
        feats = {}
        ex = pos = None
        for h in names:
            if store.layout(h) != "pos":
                raise ProbeInputError(f"hook {h!r} is an attention pattern; probes need [pos ...] activations")
            x, e, p = store.flat(h)
            x = rearrange(x, "row ... -> row (...)")
            feats[h] = x.to(dtype) if dtype is not None else (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x)
            ex, pos = e, p
        if ex is None:
            raise ProbeInputError("no hooks to read from the store")
        tokens = torch.cat([store.tokens(i).long().cpu() for i in range(store.n_examples)])
        model = store.model
        meta = {"model": model.get("name", model.get("model_name", "unknown")), "hooks": names,
                "source": "ActivationStore", "dtype": str(next(iter(feats.values())).dtype)}
        return cls(feats, ex, pos, tokens, bool(store.prepend_bos), meta=meta)


def _content_groups(groups: Tensor, positions: Tensor, tokens: Tensor) -> Tensor:
    """Split-group id per row: prompts with identical token sequences share one id."""
    if groups.numel() == 0:
        return groups.clone()
    n = int(groups.max()) + 1
    seqs: dict[int, list[tuple[int, int]]] = {g: [] for g in range(n)}
    for g, p, t in zip(groups.tolist(), positions.tolist(), tokens.tolist()):
        seqs[g].append((p, t))
    ids: dict[tuple, int] = {}
    gid = torch.empty(n, dtype=torch.long)
    for g in range(n):
        key = tuple(t for _, t in sorted(seqs[g]))
        gid[g] = ids.setdefault(key, len(ids))
    return gid[groups]


def _resolve_hooks(model: Any, hooks: Sequence[str] | str | None) -> list[str]:
    if hooks is None:
        return default_hooks(model)
    if isinstance(hooks, str):
        hooks = [hooks]
    out: list[str] = []
    for h in hooks:
        if h in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"):
            out += default_hooks(model, h, embed=False)
        elif h == "embed":
            out.append("hook_embed")
        else:
            out.append(h)
    return list(dict.fromkeys(out))


@torch.no_grad()
def collect(
    model: Model,
    prompts: Sequence[str] | Sequence[Tensor] | Tensor,
    hooks: Sequence[str] | str | None = None,
    *,
    prepend_bos: bool = True,
    batch_size: int = 16,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> ProbeData:
    """Run ``model`` on ``prompts`` and keep the activations of ``hooks`` at every token.

    Prompts are batched by length and right-padded with copies of their own last token, without
    an attention mask: under causal attention the real tokens' activations equal those of the
    un-padded prompt (tested against one-prompt runs).

    Args:
        model: a TransformerBridge (or HookedTransformer).
        prompts: strings (tokenised by :func:`interp.tokenize` under ``prepend_bos``), or token
            id tensors used as-is (then ``prepend_bos`` only records whether they start with BOS).
        hooks: hook names; the shorthands ``"resid_post"``, ``"resid_pre"``, ``"attn_out"``,
            ``"mlp_out"`` expand to every layer and ``"embed"`` is ``hook_embed``. Default:
            ``hook_embed`` plus every ``blocks.{l}.hook_resid_post``.
        device: where the collected features are stored.
    """
    names = _resolve_hooks(model, hooks)
    str_tokens: list[list[str]] | None = None
    if isinstance(prompts, Tensor):
        if prompts.ndim == 1:
            prompts = prompts[None]
        seqs = [p for p in prompts]
    elif len(prompts) and isinstance(prompts[0], str):
        from interp.tokens import tokenize

        batch = tokenize(model, list(prompts), prepend_bos=prepend_bos, padding_side="right")
        seqs = [batch.tokens[i, batch.columns(i)].cpu() for i in range(len(batch))]
        str_tokens = batch.str_tokens
    else:
        seqs = [torch.as_tensor(p).long().flatten() for p in prompts]
    if not seqs:
        raise ProbeInputError("no prompts given")
    for i, s in enumerate(seqs):
        if s.numel() == 0:
            raise ProbeInputError(f"prompt {i} is empty")
    # Batches of similar length, right-padded by repeating each prompt's last token and run
    # without an attention mask (the engine's pad="repeat_last"): under causal attention a token
    # never sees later positions, so the real tokens' activations are exactly those of the
    # un-padded prompt (and no pad/BOS id is used, so nothing can infer a mask or shift positions).
    acts: dict[int, dict[str, Tensor]] = {}

    def reducer(sb: StreamBatch) -> list[tuple[str, Any]]:
        def keep(name: str) -> Any:  # by the requested name (the bridge's hook may carry an alias)
            def f(x: Tensor, hook: Any) -> None:
                for j, (i, n) in enumerate(zip(sb.indices, sb.lengths)):
                    acts.setdefault(i, {})[name] = x[j, :n].to(device=device, dtype=dtype, copy=True)
            return f

        return [(n, keep(n)) for n in names]

    try:
        stream(model, seqs, reducer, batch_size=batch_size, pad="repeat_last", order="length",
               require_all_fired=True)
    except CaptureError as e:
        raise KeyError(f"hooks were not captured ({e}); check the names against model.hook_dict") from e
    feats = {n: torch.cat([rearrange(acts[i][n], "pos ... -> pos (...)") for i in range(len(seqs))]) for n in names}
    groups = torch.cat([torch.full((s.numel(),), i, dtype=torch.long) for i, s in enumerate(seqs)])
    positions = torch.cat([torch.arange(s.numel()) for s in seqs])
    tokens = torch.cat([s.cpu().long() for s in seqs])
    meta: dict[str, Any] = {"hooks": names}
    meta["model"] = model_name(model)
    meta["dtype"] = str(dtype)
    return ProbeData(feats, groups, positions, tokens, prepend_bos, str_tokens=str_tokens, meta=meta)
