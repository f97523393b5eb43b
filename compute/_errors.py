"""The one exception type that means "the user asked for something we cannot do"."""


class InputError(ValueError):
    """Bad input from a user: a file, a size, a name or a value out of range.

    The message is one sentence a user can act on. The CLI prints it and exits with code 2;
    the dashboard shows it next to the control. Anything else raised is a bug.
    """
