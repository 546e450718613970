"""Outputs: each task's published result in a flow execution, and the summaries of them."""
