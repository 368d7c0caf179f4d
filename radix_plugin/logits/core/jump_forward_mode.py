"""Which jump-forward mode a request runs in, and whether a forced run is appended unverified.

Modes (engine default ``jump_forward_mode``, per request ``vllm_xargs`` ``radix_jump_forward``):

* ``forced``: SGLang's semantics. The grammar's forced text is appended in its canonical
  tokenization without asking the model, in one pass. The text stays valid, but where the
  model would have spelled the forced text with other tokens, what it writes *after* it can
  change (its context differs from plain greedy decoding).
* ``verify``: forced text is offered as drafts the model verifies, so outputs are token for
  token those of plain decoding; a rejected draft costs its forward position.
* ``auto`` (default): forced for runs of at least ``min_forced_tokens`` tokens, verified for
  shorter ones. A run saves about one step per token, while the risk of changing what follows
  is one boundary per run whatever its length; the short runs in front of free text (the
  opening ``{"story":"`` of a one-string schema) are where forcing bought the least and changed
  the output most (measured in ``benchmarks/results/structured_*``).
* ``off``: no jump-forward for this request (grammar masking only).

Pure: no vLLM import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

XARG_JUMP_FORWARD = "radix_jump_forward"
ENGINE_MODES = ("auto", "forced", "verify")
REQUEST_MODES = (*ENGINE_MODES, "off")
DEFAULT_MIN_FORCED_TOKENS = 4


class JumpForwardModeError(ValueError):
    """A bad ``radix_jump_forward`` value (ValueError: vLLM answers HTTP 400)."""


def request_mode(extra_args: Mapping[str, Any] | None, default: str) -> str:
    """The request's mode: its ``radix_jump_forward`` xarg, else the engine's ``default``."""
    if not extra_args or XARG_JUMP_FORWARD not in extra_args:
        return default
    value = extra_args[XARG_JUMP_FORWARD]
    if not isinstance(value, str) or value.strip().lower() not in REQUEST_MODES:
        shown = repr(value)[:80]
        raise JumpForwardModeError(
            f"{XARG_JUMP_FORWARD} must be one of {', '.join(REQUEST_MODES)}, got {shown}"
        )
    return value.strip().lower()


def force_run(mode: str, run_tokens: int, min_forced_tokens: int) -> bool:
    """Whether a forced run of ``run_tokens`` tokens is appended without verification."""
    if mode == "forced":
        return True
    return mode == "auto" and run_tokens >= min_forced_tokens
