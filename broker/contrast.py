"""Readable colours for the login page from one brand colour, `BROKER_ACCENT_COLOR`.

The accent fills the sign-in button and colours links and focus rings on the white card.
WCAG 2.2 success criterion 1.4.3 (AA) asks 4.5:1 between text and its background, with
contrast and relative luminance as WCAG defines them. So the button text is white when
white reaches 4.5:1 on the accent and near-black otherwise (one of the two always does),
and links use the accent darkened, keeping its hue, until it reaches 4.5:1 on white. The
page never refuses a colour; start-up warns in one line when it had to adjust one.
"""

from __future__ import annotations

from dataclasses import dataclass

AA_TEXT = 4.5
WHITE = "#ffffff"
DARK = "#111827"  # the page's text colour (login.css --text)
CARD = WHITE


def _channel(value: int) -> float:
    c = value / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _rgb(color: str) -> tuple[int, int, int]:
    text = color.removeprefix("#")
    if len(text) != 6:
        raise ValueError(f"not a #rrggbb colour: {color!r}")
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


def luminance(color: str) -> float:
    """WCAG relative luminance of a `#rrggbb` colour."""
    r, g, b = (_channel(v) for v in _rgb(color))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio, 1 to 21."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _darken(color: str, amount: float) -> str:
    r, g, b = _rgb(color)
    return "#" + "".join(f"{round(v * (1 - amount)):02x}" for v in (r, g, b))


@dataclass(frozen=True, slots=True)
class AccentColors:
    accent: str
    """The brand colour as configured: the button's background and the card's top rule."""
    on_accent: str
    """Text on the accent (the button label)."""
    accent_text: str
    """The accent as text on the white card (links, focus rings)."""

    @property
    def adjusted(self) -> bool:
        return self.on_accent != WHITE or self.accent_text != self.accent


def accent_colors(accent: str) -> AccentColors:
    accent = accent.lower()
    if contrast(WHITE, accent) >= AA_TEXT:
        on_accent = WHITE
    else:
        on_accent = DARK if contrast(DARK, accent) >= AA_TEXT else "#000000"
    text, step = accent, 0
    while contrast(text, CARD) < AA_TEXT and step < 20:
        step += 1
        text = _darken(accent, step * 0.05)
    return AccentColors(accent, on_accent, text)


def accent_warning(accent: str) -> str | None:
    """One line for the start-up log when the page does not use the accent as given."""
    colors = accent_colors(accent)
    if not colors.adjusted:
        return None
    parts = []
    if colors.on_accent != WHITE:
        parts.append(
            f"white button text on it would have a contrast of {contrast(WHITE, accent):.1f}:1, "
            f"so the button text is {colors.on_accent} ({contrast(colors.on_accent, accent):.1f}:1)"
        )
    if colors.accent_text != colors.accent:
        parts.append(
            f"as link text on white it has {contrast(accent, CARD):.1f}:1, so links use "
            f"{colors.accent_text} ({contrast(colors.accent_text, CARD):.1f}:1)"
        )
    return (
        f"BROKER_ACCENT_COLOR {accent}: {'; '.join(parts)} "
        f"(WCAG AA asks {AA_TEXT}:1); pick a darker colour to use it as given"
    )
