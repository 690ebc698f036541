"""Errors every layer may raise: a ``UsageProblem`` ends a command in one line."""


class UsageProblem(Exception):
    """Something the user can fix; the message is one line naming the problem and the fix."""
