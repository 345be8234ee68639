"""`{{convert}}` as plain text: the value and unit as the page reads them, the conversion on request.

Only the units that enwiki articles use most are known (the excerpt's 40 and the common SI and US
ones); an unknown unit code is shown as typed, never guessed. The conversion is rounded to about as
many significant figures as the input, or to the decimals the call asks for, as the template does.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple


class Unit(NamedTuple):
    symbol: str
    singular: str
    plural: str
    dimension: str
    factor: float  # base units per unit; temperatures are handled apart
    default_out: str


def _u(symbol, singular, plural, dimension, factor, out) -> Unit:
    return Unit(symbol, singular, plural, dimension, factor, out)


_MI, _FT, _IN, _LB = 1609.344, 0.3048, 0.0254, 0.45359237
_BBL, _USGAL, _ACRE = 0.158987294928, 0.003785411784, 4046.8564224
# fmt: off
UNITS: dict[str, Unit] = {
    "km": _u("km", "kilometre", "kilometres", "length", 1000, "mi"),
    "m": _u("m", "metre", "metres", "length", 1, "ft"),
    "cm": _u("cm", "centimetre", "centimetres", "length", 0.01, "in"),
    "mm": _u("mm", "millimetre", "millimetres", "length", 0.001, "in"),
    "mi": _u("mi", "mile", "miles", "length", _MI, "km"),
    "nmi": _u("nmi", "nautical mile", "nautical miles", "length", 1852, "km"),
    "ft": _u("ft", "foot", "feet", "length", _FT, "m"),
    "in": _u("in", "inch", "inches", "length", _IN, "mm"),
    "yd": _u("yd", "yard", "yards", "length", 0.9144, "m"),
    "AU": _u("AU", "astronomical unit", "astronomical units", "length", 1.495978707e11, "km"),
    "km2": _u("km2", "square kilometre", "square kilometres", "area", 1e6, "sqmi"),
    "m2": _u("m2", "square metre", "square metres", "area", 1, "sqft"),
    "sqmi": _u("sq mi", "square mile", "square miles", "area", _MI**2, "km2"),
    "sqft": _u("sq ft", "square foot", "square feet", "area", _FT**2, "m2"),
    "ha": _u("ha", "hectare", "hectares", "area", 1e4, "acre"),
    "acre": _u("acres", "acre", "acres", "area", _ACRE, "ha"),
    "e6acre": _u("million acres", "million acres", "million acres", "area", 1e6 * _ACRE, "km2"),
    "m3": _u("m3", "cubic metre", "cubic metres", "volume", 1, "cuft"),
    "ft3": _u("cu ft", "cubic foot", "cubic feet", "volume", _FT**3, "m3"),
    "cuft": _u("cu ft", "cubic foot", "cubic feet", "volume", _FT**3, "m3"),
    "Tcuft": _u("trillion cubic feet", "trillion cubic feet", "trillion cubic feet", "volume",
                1e12 * _FT**3, "km3"),
    "km3": _u("km3", "cubic kilometre", "cubic kilometres", "volume", 1e9, "cumi"),
    "L": _u("L", "litre", "litres", "volume", 0.001, "USgal"),
    "USgal": _u("US gal", "US gallon", "US gallons", "volume", _USGAL, "L"),
    "MUSgal": _u("million US gallons", "million US gallons", "million US gallons", "volume",
                 1e6 * _USGAL, "m3"),
    "oilbbl": _u("bbl", "barrel", "barrels", "volume", _BBL, "m3"),
    "Moilbbl": _u("million barrels", "million barrels", "million barrels", "volume", 1e6 * _BBL, "m3"),
    "Goilbbl": _u("billion barrels", "billion barrels", "billion barrels", "volume", 1e9 * _BBL, "km3"),
    "oilbbl/d": _u("bbl/d", "barrel per day", "barrels per day", "flow", _BBL, "m3/d"),
    "koilbbl/d": _u("thousand barrels per day", "thousand barrels per day", "thousand barrels per day",
                    "flow", 1e3 * _BBL, "m3/d"),
    "Moilbbl/d": _u("million barrels per day", "million barrels per day", "million barrels per day",
                    "flow", 1e6 * _BBL, "m3/d"),
    "m3/d": _u("m3/d", "cubic metre per day", "cubic metres per day", "flow", 1, "oilbbl/d"),
    "kg": _u("kg", "kilogram", "kilograms", "mass", 1, "lb"),
    "g": _u("g", "gram", "grams", "mass", 0.001, "oz"),
    "oz": _u("oz", "ounce", "ounces", "mass", 0.028349523125, "g"),
    "lb": _u("lb", "pound", "pounds", "mass", _LB, "kg"),
    "t": _u("t", "tonne", "tonnes", "mass", 1000, "LT"),
    "MT": _u("MT", "tonne", "tonnes", "mass", 1000, "LT"),
    "LT": _u("long tons", "long ton", "long tons", "mass", 1016.0469088, "t"),
    "ST": _u("short tons", "short ton", "short tons", "mass", 907.18474, "t"),
    "e6carat": _u("million carats", "million carats", "million carats", "mass", 200, "kg"),
    "km/h": _u("km/h", "kilometre per hour", "kilometres per hour", "speed", 1 / 3.6, "mph"),
    "mph": _u("mph", "mile per hour", "miles per hour", "speed", _MI / 3600, "km/h"),
    "m/s": _u("m/s", "metre per second", "metres per second", "speed", 1, "ft/s"),
    "ft/s": _u("ft/s", "foot per second", "feet per second", "speed", _FT, "m/s"),
    "PD/sqmi": _u("/sq mi", "per square mile", "per square mile", "density", 1 / _MI**2, "PD/km2"),
    "PD/km2": _u("/km2", "per square kilometre", "per square kilometre", "density", 1e-6, "PD/sqmi"),
    "C": _u("°C", "degree Celsius", "degrees Celsius", "temperature", 1, "F"),
    "°C": _u("°C", "degree Celsius", "degrees Celsius", "temperature", 1, "F"),
    "F": _u("°F", "degree Fahrenheit", "degrees Fahrenheit", "temperature", 1, "C"),
    "°F": _u("°F", "degree Fahrenheit", "degrees Fahrenheit", "temperature", 1, "C"),
    "K": _u("K", "kelvin", "kelvins", "temperature", 1, "C"),
    "C-change": _u("°C", "degree Celsius", "degrees Celsius", "tempchange", 1, "F-change"),
    "F-change": _u("°F", "degree Fahrenheit", "degrees Fahrenheit", "tempchange", 5 / 9, "C-change"),
}
# What the text between two values of a range reads as.
RANGES = {"-": "–", "–": "–", "&ndash;": "–", "to": " to ", "and": " and ", "or": " or ", "by": " by ",
          "x": " × ", "+/-": " ± ", "to(-)": " to ", "and(-)": " and "}
# fmt: on
_NUMBER_RE = re.compile(r"[-−+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?", re.I)


def _number(text: str) -> float | None:
    text = text.strip().replace("−", "-")
    return float(text.replace(",", "")) if _NUMBER_RE.fullmatch(text) else None


def format_value(text: str) -> str:
    """`2381741` -> `2,381,741`, as the template writes numbers of four digits and more."""
    text = text.strip()
    if not _NUMBER_RE.fullmatch(text) or "," in text or "e" in text.lower():
        return text
    sign = text[0] if text[0] in "-−+" else ""
    whole, dot, frac = text[len(sign) :].partition(".")
    if len(whole) >= 4:
        whole = f"{int(whole):,}"
    return f"{sign.replace('-', '−')}{whole}{dot}{frac}"


def _unit_text(unit: Unit | None, code: str, named: dict[str, str], value: float | None) -> str:
    if unit is None:
        return code
    abbr = named.get("abbr", "").strip().lower()
    if abbr in {"on", "in", "yes"}:
        return unit.symbol
    if named.get("adj", "").strip().lower() in {"on", "yes"}:
        name = unit.singular
    else:
        name = unit.singular if value is not None and abs(value) == 1 else unit.plural
    if named.get("sp", "").strip().lower() == "us":
        name = name.replace("metre", "meter").replace("litre", "liter")
    return name


def _split(positional: list[str]) -> tuple[list[str], str, list[str]]:
    """(values with their range words between them, unit code, the arguments after the unit)."""
    values = [positional[0]]
    i = 1
    while i + 1 < len(positional) and positional[i].strip() in RANGES:
        values += [positional[i].strip(), positional[i + 1]]
        i += 2
    unit = positional[i].strip() if i < len(positional) else ""
    return values, unit, positional[i + 1 :]


def render_convert(positional: list[str], named: dict[str, str], with_output: bool) -> str:
    """`{{convert|...}}` as plain wikitext: "2,381,741 square kilometres" (and "(919,595 sq mi)")."""
    if not positional or not positional[0].strip():
        return ""
    values, code, rest = _split(positional)
    unit = UNITS.get(code)
    shown = "".join(RANGES[v] if i % 2 else format_value(v) for i, v in enumerate(values))
    if named.get("abbr", "").strip().lower() == "values":
        return shown
    last = _number(values[-1])
    joiner = "-" if named.get("adj", "").strip().lower() in {"on", "yes"} else " "
    text = f"{shown}{joiner}{_unit_text(unit, code, named, last if len(values) == 1 else None)}"
    if with_output and unit is not None:
        converted = _converted(values, unit, rest, named)
        if converted:
            text += f" ({converted})"
    return text


def _converted(values: list[str], unit: Unit, rest: list[str], named: dict[str, str]) -> str:
    out_code = rest[0].strip() if rest and _number(rest[0]) is None and rest[0].strip() else unit.default_out
    out = UNITS.get(out_code)
    if out is None or out.dimension != unit.dimension:
        return ""
    precision = next((int(r) for r in rest[1:] + rest[:1] if r.strip().lstrip("-").isdigit()), None)
    pieces = []
    for i, value in enumerate(values):
        if i % 2:
            pieces.append(RANGES[value])
            continue
        number = _number(value)
        if number is None:
            return ""
        pieces.append(_rounded(_to(number, unit, out), value, precision, named.get("sigfig")))
    return "".join(pieces) + " " + out.symbol


def _to(value: float, unit: Unit, out: Unit) -> float:
    if unit.dimension == "temperature":
        celsius = {"°C": value, "°F": (value - 32) * 5 / 9, "K": value - 273.15}[unit.symbol]
        return {"°C": celsius, "°F": celsius * 9 / 5 + 32, "K": celsius + 273.15}[out.symbol]
    return value * unit.factor / out.factor


def _significant_digits(source: str) -> int:
    """`1300` has 2 (an integer's trailing zeros only place it), `0.50` has 2, `1.25` has 3."""
    digits = source.strip().lstrip("-−+").replace(",", "")
    if "." not in digits:
        return len(digits.strip("0")) or 1
    return len(digits.replace(".", "").lstrip("0")) or 1


def _rounded(value: float, source: str, precision: int | None, sigfig: str | None) -> str:
    """Rounded to `precision` decimals, `sigfig` figures, or about the input's figures (at least 2)."""
    if precision is None:
        digits = _significant_digits(source)
        figures = int(sigfig) if sigfig and sigfig.strip().isdigit() else max(2, digits)
        magnitude = math.floor(math.log10(abs(value))) if value else 0
        precision = figures - 1 - magnitude
    rounded = round(value, precision)
    text = f"{rounded:,.{max(precision, 0)}f}"
    return text.replace("-", "−")
