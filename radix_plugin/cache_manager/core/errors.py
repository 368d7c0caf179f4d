"""Errors of the radix tree that its policies raise or catch too (a module of its own, so
policies need not import the tree that imports them)."""


class PinBudgetExceeded(RuntimeError):
    """Raised when pinning a prefix would exceed the configured pin budget."""
