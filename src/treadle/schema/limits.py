"""How large a GraphQL document may be: shared by the schema's limiters and the HTTP view."""

from typing import Final

MAX_DEPTH: Final = 10
MAX_ALIASES: Final = 30
MAX_TOKENS: Final = 5000
