"""Thin REST aliases over the same service functions GraphQL uses."""
