"""``AttributionGraph``: edge scores over the position-aware computational graph.

The public home of the dense graph (defined in :mod:`circuits._graph`, with the definitions of
Haklay et al. 2025, arXiv:2502.04577). Importing this module also imports
:mod:`circuits.stores`, which registers the sparse and sharded stores, so
:meth:`AttributionGraph.load` opens every kind of saved graph. The stores build on
:mod:`circuits._graph` and this module sits above both: no import cycle.
"""

from __future__ import annotations

import circuits.stores  # noqa: F401  (registers the sparse/sharded loaders of AttributionGraph.load)
from circuits._graph import GRAPH_VERSION, KINDS, AttributionGraph, Edge, node_layer, plot_graph, receiver_kind

__all__ = ["AttributionGraph", "Edge", "GRAPH_VERSION", "KINDS", "node_layer", "receiver_kind", "plot_graph"]
