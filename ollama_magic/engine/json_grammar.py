"""The grammar behind ``format: "json"``: llama.cpp's ``grammars/json.gbnf``.

Whitespace between tokens is bounded (one space, or a newline and at most 20 indent characters), as
in llama.cpp's grammar. An unbounded ``ws`` lets a greedy small model emit whitespace until
``num_predict`` runs out, leaving a reply that is not JSON.
"""

from __future__ import annotations

JSON_GRAMMAR = r'''
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4})
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

ws ::= | " " | "\n" [ \t]{0,20}
'''
