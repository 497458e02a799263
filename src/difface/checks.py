"""The checks of the options (difface.config): one validator per option and `OptionError`, which names the option
by its field name (each front end writes it its own way: the CLI as its flag, the app as its label). Imports no
torch: the checks that need a heavy table import it when they run."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from difface.names import DEFAULT_QUALITY, OFFICIAL, OUTPUT_FORMATS
from difface.strength import strength_error


def _solvers() -> tuple[str, ...]:
    from difface.diffusion.solvers import SOLVERS

    return tuple(SOLVERS)


_REF = "\x1f"  # brackets an option named inside an OptionError's message (see `ref`)


def ref(option: str) -> str:
    """An option named inside an OptionError's message, by its field name; each front end writes it its own way
    (OptionError.say: the CLI as its flag, "--sampler")."""
    return f"{_REF}{option}{_REF}"


def say_options(text: str, names: Mapping[str, str]) -> str:
    """Any other text (a warning, a failure reason, a refusal) names an option as its field in backticks,
    "`upscale`", which is how a caller of the Python API writes it; a front end rewrites each field it has a
    name for (the CLI's log handler: "--upscale"; the app: its label) and leaves every other backtick as is."""
    return re.sub(r"`([a-z_]+)`", lambda m: names.get(m[1], m[0]), text)


class OptionError(ValueError):
    """An option value that cannot work. `option` is the option's field name in these classes ("eta",
    "start_step", "max_seconds", ...): no front end's spelling; `message` names the options it mentions the same
    way. `say(names)` writes both as a front end does (difface.commands.options: "--eta: must lie in ...")."""

    def __init__(self, option: str, message: str):
        self.option, self.template = option, message
        self.message = self._render(message, {})
        super().__init__(f"{option}: {self.message}")

    @staticmethod
    def _render(text: str, names: Mapping[str, str]) -> str:
        return say_options(re.sub(f"{_REF}([a-z_]+){_REF}", lambda m: names.get(m[1], m[1]), text), names)

    def say(self, names: Mapping[str, str]) -> str:
        """"<option>: <message>" with each option written as names[field] (a field without an entry as it is)."""
        return f"{names.get(self.option, self.option)}: {self._render(self.template, names)}"


def _int(option: str, value, lo: int | None = None, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(option, f"expected an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise OptionError(option, f"must be {bounds}, got {value}")


def _number(option: str, value, lo: float, hi: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptionError(option, f"expected a finite number, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise OptionError(option, f"must lie in [{lo:g}, {hi:g}], got {value:g}" if hi is not None
                          else f"must be at least {lo:g}, got {value:g}")


def check_start_step(value, allow_auto: bool = True) -> None:
    """start_step: None, a step >= 0, or "auto" (when allow_auto)."""
    if isinstance(value, str):
        if value != "auto" or not allow_auto:
            raise OptionError("start_step", f"expected an integer{' or auto' if allow_auto else ''}, got {value!r}")
    elif value is not None:
        _int("start_step", value, 0)


def check_strength(value, start_step=None) -> None:
    """strength: None, "auto" or a number in [0, 1]; with an explicit start step only None (one sets the other)."""
    problem = strength_error(value)
    if problem:
        raise OptionError("strength", problem)
    if value is not None and start_step is not None:
        raise OptionError("strength", f"give {ref('strength')} or {ref('start_step')}, not both: a strength sets the "
                          "start step (difface.strength)")


def check_eta(value) -> None:
    """eta: None or a number in [0, 1]."""
    if value is not None:
        _number("eta", value, 0.0, 1.0)


def check_nfe(value, sampler: str) -> None:
    """nfe: None, or at least 1 for a few-step sampler (the official loop takes none)."""
    if value is None:
        return
    if sampler == OFFICIAL:
        raise OptionError("nfe", f"applies to {ref('sampler')} {' or '.join(_solvers())}; the official loop makes one "
                          f"evaluation per respaced step (see {ref('steps')} and {ref('start_step')})")
    _int("nfe", value, 1)


def check_threads(value) -> None:
    """threads: CPU threads of the network forwards, 0 (automatic: difface.threads.choose) or a count."""
    _int("threads", value, 0, 4096)


def check_max_pixels(value) -> None:
    """max_pixels: a pixel count of at least 1."""
    _int("max_pixels", value, 1)


def check_output_format(ext, quality) -> None:
    """ext: one of OUTPUT_FORMATS; quality: 1 to 100, and only for the lossy formats (PNG is lossless)."""
    if ext not in OUTPUT_FORMATS:
        raise OptionError("ext", f"must be one of {', '.join(OUTPUT_FORMATS)}, got {ext!r}")
    _int("quality", quality, 1, 100)
    if ext == "png" and quality != DEFAULT_QUALITY:
        raise OptionError("quality", f"applies to {ref('ext')} jpg or webp; PNG is lossless")


def respaced_length(steps: str) -> int:
    """Number of steps of a respacing spec ("ddim250", "250", "100,50"); OptionError when invalid."""
    from difface.diffusion.schedule import space_timesteps

    try:
        n = len(space_timesteps(1000, steps))
    except (ValueError, TypeError) as e:
        raise OptionError("steps", f"{steps!r} is not a valid respacing ({e}); use e.g. ddim250, ddim50 or 250") \
            from None
    if n < 1:
        raise OptionError("steps", f"{steps!r} keeps no step; use e.g. ddim250")
    return n


def _check_backend(backend: str, dtype: str, torch_only: bool) -> None:
    """OptionError("backend") for an unknown or missing backend (with the pip command) or a combination
    it cannot run on any device (its entry of difface.backends.RUNTIMES)."""
    from difface.backends import RUNTIMES, BackendUnavailable, check_backend

    if backend not in RUNTIMES:
        raise OptionError("backend", f"must be one of {', '.join(RUNTIMES)}, got {backend!r}")

    try:
        check_backend(backend)
    except BackendUnavailable as e:
        raise OptionError("backend", str(e)) from None
    runtime = RUNTIMES[backend]
    if torch_only and runtime.build is not None:
        raise OptionError("backend", f"{ref('fast')} and {ref('compile')} are torch options; leave them out with "
                          f"{backend}")
    why = runtime.refusal(dtype)
    if why:
        raise OptionError("backend", why)
