"""Exchange formats: results other tools can read.

* :mod:`circuits.exchange.eap_ig` — EAP-IG / MIB graph JSON (position-agnostic projection of an
  :class:`~circuits.graph.AttributionGraph` or :class:`~circuits.circuit.Circuit`, and import
  back into this project for real-patching faithfulness); MIB circuit-track submission files.
* :mod:`circuits.exchange.graph_json` — positional graphs as Neuronpedia / circuit-tracer graph
  JSON (nodes with layer, head, context index or span; links with weights).
"""

from .eap_ig import (MIB_MODELS, MIB_TASKS, EAPIGLayout, circuit_from_eap_ig, eap_ig_edge_names, graph_from_eap_ig,
                     load_eap_ig, save_eap_ig, save_mib_submission, to_eap_ig)
from .graph_json import save_graph_json, to_graph_json

__all__ = ["EAPIGLayout", "MIB_MODELS", "MIB_TASKS", "circuit_from_eap_ig", "eap_ig_edge_names", "graph_from_eap_ig",
           "load_eap_ig", "save_eap_ig", "save_mib_submission", "to_eap_ig", "save_graph_json", "to_graph_json"]
