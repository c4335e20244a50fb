"""Built-in report sections; importing this package registers them."""

from interp.reports.sections import capture, circuit, heads, longctx, model, neurons, planted, probes, rope, sinks  # noqa: F401
