"""Built-in report sections; importing this package registers them."""

from interp.reports.sections import atlas, capture, circuit, heads, model, neurons, probes, rope, sinks  # noqa: F401
