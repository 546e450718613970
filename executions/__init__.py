"""Executions: runs of a flow version (FlowExecution) and attempts of its tasks (TaskExecution)."""
