"""The prompt set of ``interp report`` and the JSONL prompt-file reader.

Real models get the bundled :mod:`interp.datasets` prompt set (280 prompts in five domains, 17 to
1,856 tokens; each report section draws its own sized sample of it, see
``interp.reports.sections._data``). :data:`DEFAULT_PROMPTS` is the older seven-prompt set, kept
for quick runs (``default_prompts()``).

JSONL format: one JSON object per line with ``"text"`` (or ``"prompt"``) and an optional
``"domain"`` (default ``"prose"``); other keys are kept as per-prompt metadata. A line may also
be a bare JSON string. Blank lines and lines starting with ``#`` are ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

from interp.prompts import QUICK_PROMPTS
from interp.reports._registry import Prompt

DEFAULT_PROMPTS: tuple[Prompt, ...] = tuple(Prompt(text, domain) for text, domain in QUICK_PROMPTS)


def default_prompts() -> list[Prompt]:
    """A copy of the built-in prompt set (prose and code, a few dozen tokens each)."""
    return [Prompt(p.text, p.domain, dict(p.meta)) for p in DEFAULT_PROMPTS]


def bundled_prompts() -> list[Prompt]:
    """The bundled prompt set (``interp.datasets.prompts("prompts")``)."""
    from interp import datasets

    return datasets.prompts("prompts")


def prompts_for_model(model_name: str, *, n_toy: int = 128, seed: int = 0) -> list[Prompt]:
    """The default prompt set for ``model_name``.

    Real models get :func:`bundled_prompts`. Toy zoo models (``toy-*``) have their own word-level
    vocabulary (``t0 t1 …``), so they get ``n_toy`` examples of the task they were trained on
    (``interp.zoo.make_batch``, the manifest's generator), as text without BOS (domain = the task
    name).
    """
    if model_name.startswith("toy-"):
        from interp import zoo

        if model_name in zoo.TOY_MODELS:
            batch = zoo.make_batch(model_name, n_toy, seed=seed)
            return [Prompt(t, batch.task, {"source": f"interp.zoo.make_batch({model_name!r}, seed={seed})"})
                    for t in batch.texts()]
    return bundled_prompts()


def load_prompts(path: str | Path) -> list[Prompt]:
    """Read prompts from a JSONL file; raises ``FileNotFoundError``/``ValueError`` naming the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist; pass a JSONL file with one "
                                '{"text": ..., "domain": ...} object per line')
    prompts: list[Prompt] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not valid JSON ({e.msg}); each line must be one JSON object") from None
        if isinstance(obj, str):
            obj = {"text": obj}
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{i}: expected a JSON object with a 'text' field, got {type(obj).__name__}")
        text = obj.pop("text", None)
        if text is None:
            text = obj.pop("prompt", None)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}:{i}: missing or empty 'text' (or 'prompt') field")
        domain = obj.pop("domain", "prose")
        prompts.append(Prompt(text, str(domain), obj))
    if not prompts:
        raise ValueError(f"prompt file {str(path)!r} holds no prompts")
    return prompts
