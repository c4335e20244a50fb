"""The shipped IOI task is one SmolLM2 actually solves (behavioural check of the task data)."""

from __future__ import annotations

import pytest
import torch

from circuits import tasks
from circuits.metrics import MetricBatch


@pytest.mark.real_model
@pytest.mark.parametrize("prepend_bos", [False, True])
def test_smollm2_solves_ioi_in_both_orders(smollm2, prepend_bos):
    """Logit difference IO − S at the final token, both name orders (Wang et al. 2022).

    Measured (64 prompts, template 0): mean 5.0 without BOS (100 % positive), 4.2 with BOS
    (95 %) — SmolLM2's own tokenizer adds no BOS, and the model is more confident without it.
    """
    t = tasks.ioi(smollm2, 16, seed=1, prepend_bos=prepend_bos)
    assert t.clean.prepend_bos is prepend_bos
    assert t.clean.tokens.shape == t.corrupt.tokens.shape
    with torch.no_grad():
        lg = smollm2(t.clean.tokens, attention_mask=t.clean.attention_mask)
    ld = t.metric(lg, MetricBatch.from_mask(t.clean.attention_mask))
    orders = [a["order"] for a in t.answers]
    for order in ("ABBA", "BABA"):
        sel = torch.tensor([o == order for o in orders])
        assert sel.sum() == 8
        print(f"bos={prepend_bos} {order}: mean logit diff {float(ld[sel].mean()):.2f}")
        assert float(ld[sel].mean()) > 3.0
    assert float((ld > 0).float().mean()) >= 0.85
    # the counterfactual (all three names replaced by others) removes the preference on average
    with torch.no_grad():
        lx = smollm2(t.corrupt.tokens, attention_mask=t.corrupt.attention_mask)
    lx_d = t.metric(lx, MetricBatch.from_mask(t.corrupt.attention_mask))
    assert abs(float(lx_d.mean())) < 0.3 * float(ld.mean())
