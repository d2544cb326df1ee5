"""The intermediate representation: symbolic values, layer-call nodes and graphs."""

from .graph import Graph, Node, Value, check_unique_names

__all__ = ["Graph", "Node", "Value", "check_unique_names"]
