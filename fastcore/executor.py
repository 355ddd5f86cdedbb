"""Blocking or CPU-bound work off the loop's thread, the result back on it."""

from fastcore._impl import core


def run_in_executor(executor, fn, /, *args, callback=None):
    """Run ``fn(*args)`` on a ``concurrent.futures`` executor.

    When it finishes, ``callback(future)`` runs on the loop's thread (handed
    over with call_soon_threadsafe, which wakes a sleeping loop): the done
    future's ``result()`` gives the value or raises the exception. Returns
    the future.
    """
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable, not %r" % (callback,))
    future = executor.submit(fn, *args)
    if callback is not None:
        future.add_done_callback(lambda done: core.call_soon_threadsafe(callback, done))
    return future
