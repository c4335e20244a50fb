"""Built-in report sections; importing this package registers them."""

from interp.reports.sections import capture, heads, model, neurons, sinks  # noqa: F401
