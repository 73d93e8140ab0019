"""The pure workflow engine: definitions, states, planning, templates, step types.

Invariants:
- Nothing here opens a connection or reads the environment; the outside world reaches step types
  only through ``StepContext``.
- A step's own failure is a value (``Failed``), never an exception that escapes ``execute_step``.
"""
