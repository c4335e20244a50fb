"""Built-in report sections; importing this package registers them."""

from interp.reports.sections import (  # noqa: F401
    atlas, capture, circuit, heads, longctx, model, neurons, planted, probes, rope, sinks)
