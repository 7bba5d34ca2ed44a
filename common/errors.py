"""Exceptions raised by fedcare. Messages name files, rows, keys and kinds, never record text."""


class FedcareError(Exception):
    """Base class of every error fedcare raises on purpose."""


class ConfigError(FedcareError, ValueError):
    """A configuration value is missing, of the wrong kind or out of range."""


class DataError(FedcareError, ValueError):
    """A site's data file cannot be used; the message names file, row and reason only."""


class PrivacyBudgetExceededError(FedcareError, RuntimeError):
    """Training one more round would spend more epsilon than the site allows."""


class AdapterLayoutError(FedcareError, ValueError):
    """Adapter tensors do not match the expected LoRA names, shapes or dtypes."""


class PlanRefusedError(FedcareError, ValueError):
    """A coordinator's round plan asks more than the site's own limits allow (key, asked value and cap named)."""


class RunDirectoryError(FedcareError, FileNotFoundError):
    """A run (or sweep) directory lacks the files a command needs: the run did not finish, or is not a run."""


class SiteStateError(FedcareError, RuntimeError):
    """A site's state directory is damaged (missing or corrupt ledger): the site refuses to guess a budget."""


def printable(text: object) -> str:
    """``text`` with control and other unprintable characters escaped (``\\n``, ``\\x1b``), so it stays one line.

    File names are chosen by users and may hold a newline or a terminal escape sequence; fedcare prints
    them, and every error message, through this.
    """
    value = str(text)
    if value.isprintable():
        return value
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in value
    )
