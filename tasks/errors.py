"""The one error type for bad input: a path plus what is wrong with it.

Every command line entry point catches `InputError`, prints its single line and exits
with status 2, so raising it is how library code reports a malformed trace, a wrong
path or a mismatched space to a user without a traceback. `RunFailed` is the same for
a run that started well and then failed (a diverging loss): one line, exit status 1.
"""

from __future__ import annotations

import os


class InputError(Exception):
    """A file or argument that cannot be used, with the path and the problem.

    Args:
        path: the file, folder or argument at fault.
        problem: what is wrong, in a few words a user can act on.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class RunFailed(RuntimeError):
    """A run that could not finish, with a message that says what was kept."""
