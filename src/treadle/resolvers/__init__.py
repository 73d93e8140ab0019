"""Thin GraphQL root resolvers: parse, call one service function, shape the view."""
