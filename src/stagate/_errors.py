"""The package's exceptions, in a module of their own so the command line can catch them
without importing torch or anndata first."""


class StagateInputError(ValueError):
    """Bad user input: the message names the problem and the fix."""


class NotFittedError(ValueError, AttributeError):
    """A model was used before `fit`."""
