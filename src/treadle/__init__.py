"""Treadle: durable, observable AI workflows."""
