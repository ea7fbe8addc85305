"""The context-manager protocol shared by everything that holds mappings or workers until closed."""

from __future__ import annotations


class ClosesOnExit:
    """``with obj:`` closes it; so does garbage collection. Subclasses define an idempotent close()."""

    def close(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
