"""The lifecycle of the classes that run a task group (Producer, Consumer, S3Sink,
BufferedOutput, the demo's archive tap): the group is entered by hand when the object
starts, kept out of any exit stack, and left in the owner task after ``aclose()``, with
no other cancel scope of ours around it. These three steps are written here once."""

from __future__ import annotations

from types import TracebackType

import anyio
import anyio.abc

__all__ = ["exit_task_group", "open_task_group", "stop_task_group"]


async def open_task_group() -> anyio.abc.TaskGroup:
    """A task group entered in the calling task (leave it with :func:`exit_task_group`
    or :func:`stop_task_group`, in that task)."""
    tg = anyio.create_task_group()
    await tg.__aenter__()
    return tg


async def exit_task_group(
    tg: anyio.abc.TaskGroup,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> bool | None:
    """Leave ``tg`` from its owner's ``__aexit__``, waiting for its tasks. Only a
    cancellation of the block concerns it (its cancel scope may be the one that fired);
    any other error of the block propagates as it is, not wrapped in an ExceptionGroup."""
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return await tg.__aexit__(exc_type, exc, tb)
    return await tg.__aexit__(None, None, None)


async def stop_task_group(tg: anyio.abc.TaskGroup) -> None:
    """Cancel ``tg``'s tasks and leave it (a failed start, or a close that is done)."""
    tg.cancel_scope.cancel()
    await tg.__aexit__(None, None, None)
