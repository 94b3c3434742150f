"""User-facing errors.  The CLI prints their message and exits non-zero, never a traceback."""


class BrewnetError(Exception):
    """Base class of errors caused by the user's files or arguments."""


class NetError(BrewnetError, ValueError):
    """A network definition or its weights do not make sense (names the layer and shapes)."""


class SolverError(BrewnetError, ValueError):
    """A solver definition or a solver state does not make sense."""


class DataError(BrewnetError, ValueError):
    """A dataset, list file or image cannot be read."""
