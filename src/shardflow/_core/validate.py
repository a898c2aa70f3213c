"""Checks shared by the constructors' option validation (private).

as_float() runs when options are validated, shown() only while an error message is
built: nothing here runs per accepted record.
"""

from __future__ import annotations

import math

__all__ = ["as_float", "check_bool", "check_int", "check_number", "shown"]

_SHORT_BITS = 128
"""Ints longer than this (about 39 digits) are not printed in full in messages."""


def shown(value: object) -> str:
    """``repr(value)`` for an error message, with a huge int shortened.

    An int of more than 128 bits is shown as ``10**400`` (or ``-10**400``) when it is a
    power of ten, else as ``a 401-digit int``, so that a message never carries hundreds
    of digits (and never hits the interpreter's int-to-str digit limit).
    """
    if not isinstance(value, int) or isinstance(value, bool) or value.bit_length() <= _SHORT_BITS:
        return repr(value)
    size = abs(value)
    exponent = int(math.log10(size))  # may be one off for huge ints: correct it exactly
    while 10**exponent > size:
        exponent -= 1
    while 10 ** (exponent + 1) <= size:
        exponent += 1
    sign = "-" if value < 0 else ""
    if size == 10**exponent:
        return f"{sign}10**{exponent}"
    return f"a {'negative ' if sign else ''}{exponent + 1}-digit int"


def as_float(name: str, value: float, must: str) -> float:
    """``float(value)`` of an option already checked to be an int or a float.

    An int beyond float range (``10**400``) raises ValueError naming the option:
    "``{name} must be {must}, got 10**400, beyond float range``" (no OverflowError).
    """
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} must be {must}, got {shown(value)}, beyond float range") from None


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``; else TypeError or
    ValueError naming the option ("``{name} must be between 1 and 1,000, got 0``")."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {shown(value)}")
    if value < low or (high is not None and value > high):
        bound = f"between {low:,} and {high:,}" if high is not None else f">= {low:,}"
        raise ValueError(f"{name} must be {bound}, got {shown(value)}")
    return value


def check_number(
    name: str,
    value: object,
    *,
    positive: bool = True,
    minimum: float | None = None,
    finite: bool = True,
    unit: str = "",
) -> float:
    """``value`` as a float: > 0 (``positive``) or >= 0, or >= ``minimum`` when given;
    finite unless ``finite=False`` (then +inf passes, e.g. "wait forever"). Else TypeError
    or ValueError naming the option and ``unit`` ("``{name} must be > 0 seconds, got 0.0``")."""
    of_unit = f" of {unit}" if unit else ""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number{of_unit}, got {shown(value)}")
    low = 0.0 if minimum is None else minimum
    inclusive = minimum is not None or not positive
    bound = f"{'>=' if inclusive else '>'} {low:g}"
    number = as_float(name, value, f"a {'finite ' if finite else ''}number{of_unit} {bound}")
    in_range = number >= low if inclusive else number > low  # False for NaN
    if not in_range or (finite and math.isinf(number)):
        raise ValueError(f"{name} must be {bound}{' ' + unit if unit else ''}, got {number}")
    return number


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is True or False (not 0, 1 or None); else TypeError naming the option."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {shown(value)}")
    return value
