"""Built-in report sections; importing this package registers them."""

from interp.reports.sections import capture, model  # noqa: F401
