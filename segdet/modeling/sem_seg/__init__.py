"""Shared pieces of the semantic-segmentation heads (the heads live with their method:
``segdet.modeling.cgrseg``, ``segdet.modeling.ssa``)."""
