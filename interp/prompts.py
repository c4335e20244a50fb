"""Built-in prompt sets shared by the analyses (one home, so analyses need not import each other).

``DEFAULT_PROMPTS``: eight short texts of mixed domains, the default input of
:func:`interp.heads.positional_heads`, :func:`interp.sinks.sink_analysis`,
:func:`interp.neurons.positional_neurons` and :func:`interp.scan.scan`. ``DOMAINS``: prose and
code prompts for the active/dormant test (Guo et al. 2024). ``ROPE_PROMPTS``: four of
``DEFAULT_PROMPTS``, the RoPE analyses' default input. ``QUICK_PROMPTS``: the report's older
seven-prompt ``(text, domain)`` set. The bundled report data sets are in :mod:`interp.datasets`.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PROMPTS", "ROPE_PROMPTS", "QUICK_PROMPTS", "DOMAINS"]

DEFAULT_PROMPTS: list[str] = [
    "The old lighthouse keeper climbed the narrow stairs every evening to light the great lamp, "
    "and the ships that passed in the night trusted its steady beam to guide them home.",
    "In 1869 the transcontinental railroad was completed, joining the eastern and western "
    "networks of the United States and cutting the journey across the continent to a week.",
    "She opened the letter slowly, read the first line twice, and then sat down by the window "
    "without saying a word to anyone in the quiet house.",
    "Photosynthesis converts light energy into chemical energy: plants take in carbon dioxide "
    "and water and release oxygen while storing sugar in their leaves and roots.",
    "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n"
    "    return total / len(values)\n\nprint(mean([1, 2, 3, 4]))\n",
    "Mix the flour, sugar and salt in a large bowl. Add the butter and rub it in until the "
    "mixture looks like fine crumbs, then stir in the milk to make a soft dough.",
    "The committee met on Tuesday to review the budget. After a long discussion, the members "
    "agreed to postpone the vote until the auditors had finished their report.",
    "When Mary and John went to the store, John gave a drink to Mary. Later that day, the two "
    "friends walked along the river and talked about their plans for the summer.",
]

#: the RoPE analyses' default input (:mod:`interp.rope`): four of :data:`DEFAULT_PROMPTS`
#: (lighthouse, railroad, code, IOI-like), short enough for the per-frequency ablations
ROPE_PROMPTS: list[str] = [DEFAULT_PROMPTS[i] for i in (0, 1, 4, 7)]

#: ``(text, domain)``: the report's older seven-prompt quick set
#: (:func:`interp.reports.default_prompts`; the report itself runs on :mod:`interp.datasets`)
QUICK_PROMPTS: tuple[tuple[str, str], ...] = (
    ("The old lighthouse keeper climbed the spiral stairs every evening to light the lamp. "
     "Ships passing in the night relied on its steady beam to avoid the rocks below the cliff.", "prose"),
    ("In 1969, two astronauts walked on the Moon while a third orbited above them. Millions of "
     "people watched the grainy television pictures and listened to the crackling voices.", "prose"),
    ("She opened the letter slowly, afraid of what it might say. The handwriting was familiar, "
     "but the words inside were cold, formal and strangely distant.", "prose"),
    ("Photosynthesis converts light energy into chemical energy. Plants take in carbon dioxide "
     "and water, and with sunlight they produce glucose and release oxygen.", "prose"),
    ("def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
     "    return a\n\nprint(fibonacci(10))\n", "code"),
    ("import os\n\nfor root, dirs, files in os.walk('.'):\n    for name in files:\n"
     "        if name.endswith('.py'):\n            print(os.path.join(root, name))\n", "code"),
    ("SELECT name, COUNT(*) AS n\nFROM orders\nWHERE created_at > '2024-01-01'\n"
     "GROUP BY name\nORDER BY n DESC\nLIMIT 10;\n", "code"),
)


DOMAINS: dict[str, list[str]] = {
    "prose": [
        "The old lighthouse keeper climbed the narrow stairs every evening to light the lamp, "
        "and the ships that passed in the night trusted its steady beam.",
        "She opened the letter slowly, read the first line twice, and then sat down by the "
        "window without saying a word to anyone in the quiet house.",
        "The committee met on Tuesday to review the budget. After a long discussion, the "
        "members agreed to postpone the vote until the auditors had finished.",
        "Mix the flour, sugar and salt in a large bowl, then rub in the butter until the "
        "mixture looks like fine crumbs and stir in the milk.",
    ],
    "code": [
        "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n"
        "    return total / len(values)\n",
        "import os\n\nfor name in sorted(os.listdir('.')):\n    if name.endswith('.py'):\n"
        "        print(name)\n",
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
        "    def push(self, x):\n        self.items.append(x)\n",
        "x = [i * i for i in range(10)]\ny = {k: v for k, v in zip('abc', x)}\n"
        "assert len(y) == 3\nprint(sum(x), y)\n",
    ],
}
