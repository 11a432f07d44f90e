"""Placeholder: nodes are added by their issue."""

NODES: list[type] = []
