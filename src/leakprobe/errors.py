"""User-facing errors: the CLI prints them as one line and exits with status 2."""


class LeakprobeError(Exception):
    """Bad input or an impossible request, explained in one line for the user."""


class BudgetExceededError(LeakprobeError):
    """A target's query budget would be exceeded by the next query."""
