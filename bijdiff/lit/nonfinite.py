"""Non-finite training losses, counted on the device and read on the host without waiting for it."""
from __future__ import annotations

import torch


class NonfiniteFlags:
    """Per-step flags (``1.0`` where a loss was NaN/Inf) copied to the host behind the step.

    ``push`` queues a device flag with a non-blocking copy and an event; ``arrived`` returns the
    flags whose copies have landed without waiting (``wait=True`` waits: at a checkpoint or the
    end of training, which sync anyway). On the CPU a flag has arrived when it is pushed.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[int, torch.Tensor, torch.Event | None]] = []

    def push(self, step: int, flag: torch.Tensor) -> None:
        """Queue the 0-d ``flag`` of optimizer step ``step``."""
        if flag.device.type == "cpu":
            self._pending.append((step, flag.detach().clone(), None))
            return
        host = torch.empty((), dtype=flag.dtype, pin_memory=flag.device.type == "cuda")
        host.copy_(flag.detach(), non_blocking=True)
        event = torch.Event(flag.device.type)
        event.record()
        self._pending.append((step, host, event))

    def arrived(self, wait: bool = False) -> list[tuple[int, float]]:
        """``(step, flag)`` of the queued flags now on the host, oldest first."""
        out = []
        while self._pending:
            step, host, event = self._pending[0]
            if event is not None and not event.query():
                if not wait:
                    break
                event.synchronize()
            out.append((step, float(host)))
            self._pending.pop(0)
        return out
