"""Treadle's benchmark (``make bench`` / ``python -m bench``).

Workloads W1-W5 run against a real ``treadle serve`` API and real ``treadle worker`` processes on
PostgreSQL + Redis (1 and 2 worker processes), and once in embedded mode (``treadle dev``:
SQLite, in-process worker). The floor is the same shapes as bare Taskiq tasks on the same Redis,
plus PostgreSQL's single-row commit rate, so each figure can be read as a multiple of what the
infrastructure alone costs. See ``bench/__main__.py`` for the options.
"""
