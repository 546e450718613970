"""Flows: named, versioned YAML definitions of task DAGs."""
