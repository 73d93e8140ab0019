"""Thin GraphQL root resolvers (parse, call one service function, shape the view), and
``build.build_schema``, which puts them together with the types of ``treadle.schema``."""
