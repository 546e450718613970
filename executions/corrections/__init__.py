"""Corrections: every change a person makes to a task's result, and its record.

`task_executions` corrects an attempt (PUT/PATCH /task-executions/{id}, admin, `correct_task`),
`task_outputs` creates, edits and deletes task outputs (/task-outputs), `preview` binds a dry
run to what it saw, and `records` writes every Correction row. Edges call these modules' functions
(`task_executions.correct_task_execution(...)`); the engine does the propagation.
"""
