"""The alias rule: how a configured account, a client and a scope's entries are named.

One rule for every place a name is checked: the configuration ([users], default_user,
[[clients]] names and their users, [oidc.scopes]), the `user` query parameter, `mint-key
--name`, and the contract's User parameter (openapi.yaml), which states it with ^ and $.
"""

from __future__ import annotations

import re

ALIAS = r"[A-Za-z0-9_.-]{1,64}"
"""The rule's regular expression, unanchored."""
# \A…\Z, not ^…$: Python's $ also matches before a trailing newline.
ALIAS_PATTERN = rf"\A{ALIAS}\Z"
ALIAS_RE = re.compile(ALIAS_PATTERN)
ALIAS_RULE = "must be 1-64 characters of A-Z a-z 0-9 _ . -"
"""What a name that breaks the rule is told."""
ALIAS_OR_ALL_PATTERN = rf"\A(\*|{ALIAS})\Z"
"""A scope's entry: an alias, or * for every alias."""
