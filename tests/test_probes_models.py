"""probes on real and toy models: collect() exactness, toy-nope position decoding (Haviv et al.
2022), SmolLM2 absolute position in early layers."""

from __future__ import annotations

import pytest
import torch

import probes

SMOL_PROMPTS = [
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "In 1492 Columbus sailed across the Atlantic Ocean in search of a new route to India.",
    "She opened the window, took a deep breath, and decided that today would be different.",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "My grandmother always said that a good soup needs patience more than expensive spices.",
    "The committee will meet on Thursday to discuss the budget for next year's festival.",
    "When the train finally arrived, the platform was crowded with tired commuters.",
    "Python is a popular programming language because its syntax is easy to read.",
    "After the storm passed, children ran outside to splash in the muddy puddles.",
    "The museum's new exhibit features paintings from artists across three centuries.",
    "He forgot his umbrella at the office and walked home in the pouring rain.",
    "Scientists discovered a new species of frog living deep in the rainforest canopy.",
    "Our neighbors planted tomatoes, peppers and basil in their small backyard garden.",
    "The orchestra played the final movement so beautifully that the audience stood up.",
    "To bake bread you need flour, water, salt, yeast, and a warm place to rest the dough.",
    "The library closes early on Sundays, so students usually study in the cafe nearby.",
    "A lighthouse stood alone on the rocky cliff, guiding ships through the dark night.",
    "The startup raised ten million dollars to build batteries for electric bicycles.",
    "Every morning the baker wakes up at four o'clock to prepare fresh croissants.",
    "The mountain trail was steep and narrow, but the view from the top was worth it.",
    "Doctors recommend drinking plenty of water and sleeping at least seven hours.",
    "The old clock in the hallway has not worked since my grandfather passed away.",
    "During the meeting, the manager announced that the project deadline had moved.",
    "Bees communicate the location of flowers to each other through a special dance.",
]


def test_collect_matches_single_prompt_runs(random_toy):
    model = random_toy("toy-induction")
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 60, (n,), generator=g) for n in (9, 5, 12, 5)]
    data = probes.collect(model, seqs, ["hook_embed", "blocks.1.hook_resid_post", "blocks.0.attn.hook_z"],
                          prepend_bos=False, batch_size=4)
    assert data.n_rows == 31 and data.hooks[1] == "blocks.1.hook_resid_post"
    assert data.features["blocks.0.attn.hook_z"].ndim == 2
    for i, s in enumerate(seqs):
        _, cache = model.run_with_cache(s[None], names_filter=lambda n: n == "blocks.1.hook_resid_post")
        got = data.features["blocks.1.hook_resid_post"][data.groups == i]
        assert torch.allclose(got, cache["blocks.1.hook_resid_post"][0], atol=1e-5)
        assert torch.equal(data.tokens[data.groups == i], s)
    assert data.split_groups[data.groups == 1][0] == data.split_groups[data.groups == 1][0]


@pytest.mark.slow
def test_toy_nope_position_is_decodable(toy_model):
    """Haviv et al. 2022: a causal model with no positional encoding still encodes absolute
    position; a linear probe recovers it after the first layer, not from the embeddings.
    Measured on a copy trained with the zoo's spec and seed (interp.zoo._train.train, out_dir):
    R^2 embed -0.001 / L0 0.943 / L1 0.340, MAE 8.01 / 1.69 / 6.02 positions."""
    model = toy_model("toy-nope")
    from interp.zoo import tasks

    batch = tasks.backcopy_batch(40, length=32, seed=123)
    data = probes.collect(model, batch.tokens, prepend_bos=True)
    res = probes.probe_sweep(data, probes.absolute_position(data), folds=4, controls=("shuffled",))
    r2 = res.mean("r2")
    assert res.labels[0] == "embed"
    assert float(r2[0]) < 0.1  # token embeddings carry no position
    assert float(r2[1:].max()) > 0.8
    mae = res.mean("mae")
    assert float(mae[1:].min()) < 0.5 * float(mae[0])
    assert float(res.mean("shuffled.r2").max()) < 0.1


@pytest.mark.real_model
def test_smollm2_absolute_position_early_layers(smollm2):
    hooks = ["hook_embed"] + [f"blocks.{l}.hook_resid_post" for l in (0, 1, 2, 3)]
    data = probes.collect(smollm2, SMOL_PROMPTS, hooks, prepend_bos=True)
    assert data.prepend_bos and data.meta["model"] == "smollm2-135m"
    res = probes.probe_sweep(data, probes.absolute_position(data), folds=4, controls=("control_task",))
    r2 = res.mean("r2")
    # The token embeddings of a RoPE model hold no position, only token identity (which correlates
    # weakly with position in prose: measured R^2 0.22 on 32 prompts); the early residual streams
    # hold position itself (R^2 0.58 / 0.62 at L1 / L2, selectivity ~0.55 vs the control task).
    assert float(r2[3]) > 0.45
    assert float(r2[3]) > float(r2[0]) + 0.2
    assert float(res.mean("selectivity")[3]) > 0.3
    assert float(res.mean("mae")[3]) < float(res.mean("mae")[0]) - 0.5
    js = res.to_json()
    assert js["prepend_bos"] is True and js["model"] == "smollm2-135m"


def test_probe_data_from_activation_store_matches_collect(random_toy):
    from interp import capture
    from interp.schema import Schema

    model = random_toy("toy-induction")
    prompts = ["t1 t2 t3 t4 t5", "t7 t8 t9", "t1 t2 t3 t4 t5 t6 t7"]
    hooks = ["hook_embed", "blocks.0.hook_resid_post"]
    store = capture(model, prompts, hooks, prepend_bos=True, schema=Schema.single("prompt"))
    from_store = probes.ProbeData.from_store(store)
    direct = probes.collect(model, prompts, hooks, prepend_bos=True)
    assert torch.equal(from_store.groups, direct.groups) and torch.equal(from_store.positions, direct.positions)
    assert torch.equal(from_store.tokens, direct.tokens) and from_store.prepend_bos
    for h in hooks:
        assert torch.allclose(from_store.features[h], direct.features[h], atol=1e-5)
    sid = probes.span_identity(from_store, store)  # spans straight from the store's schema
    assert sid.class_names == ["BOS", "prompt"]
    assert sid.values.tolist() == [0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
