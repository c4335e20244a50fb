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

FORMATS = ("eap-ig", "mib", "graph-json")


def export(fmt: str, path: str | object, *, graph: object, circuit: object = None, task: str | None = None,
           model: str | None = None, d_model: int | None = None) -> object:
    """Write ``graph`` (and ``circuit``) in one exchange format; returns the file written.

    * ``"eap-ig"``: EAP-IG graph JSON of ``graph`` (position-agnostic projection) with the
      circuit's edges marked ``in_graph``;
    * ``"mib"``: MIB importance scores, ``path/{task}_{model}/importances.json`` (any task/model
      names: ``strict=False``);
    * ``"graph-json"``: Neuronpedia / circuit-tracer graph JSON of the (positional) circuit, or of
      the graph's top 2,000 edges when no circuit is given.
    """
    if fmt == "eap-ig":
        return save_eap_ig(graph, path, circuit=circuit, d_model=d_model)
    if fmt == "mib":
        slug = "".join(c if c.isalnum() or c in "-." else "-" for c in (model or "model"))
        return save_mib_submission(graph, path, task=task or "task", model=slug, d_model=d_model, strict=False)
    if fmt == "graph-json":
        return save_graph_json(circuit if circuit is not None else graph, path)
    raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


__all__ += ["FORMATS", "export"]
