"""``fastcore.use_logging()``: dispatchers' messages and the loop's own
warnings through the ``logging`` module.

By default nothing changes: ``dispatcher.log()`` writes ``log: message`` to
stderr, ``dispatcher.log_info()`` prints ``type: message`` unless ``type`` is
in ``ignore_log_types``, and the loop writes its own warnings (a
``handle_error`` that failed, so the dispatcher was closed by force) to
stderr, exactly as 3.11 does. ``use_logging(logger)`` sends them all to
``logger`` instead, each record carrying the dispatcher's ``repr`` and fd as
the extra fields ``dispatcher`` and ``fd``, and the log_info type as
``log_type``:

==================================== =============================
``log(message)``                     DEBUG
``log_info(m, 'info')``              INFO
``log_info(m, 'warning')``           WARNING
``log_info(m, 'error')``             ERROR
``log_info(m, other type)``          INFO
a type in ``ignore_log_types``       DEBUG (3.11 drops these)
the loop's own warnings              ERROR
==================================== =============================

A subclass's own ``log``/``log_info`` overrides are left alone.
"""

import logging

from fastcore._impl import core

__all__ = ["current_logger", "use_logging"]

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

_logger = None  # the logger use_logging() gave, or None: standard behaviour
_standard = {}  # the facade's own log/log_info, while replaced


def current_logger():
    """The logger messages go to: use_logging()'s, else logging.getLogger('fastcore')
    (debug mode logs there too)."""
    return _logger if _logger is not None else logging.getLogger("fastcore")


def describe(obj):
    """The extra fields of a record about obj: its repr and fd."""
    try:
        label = repr(obj)
    except Exception:
        label = "<%s object at %#x>" % (type(obj).__name__, id(obj))
    try:
        fd = vars(obj).get("_fileno")
    except TypeError:  # no __dict__
        fd = None
    return {"dispatcher": label, "fd": fd}


def _log(self, message):
    _logger.debug("%s", message, extra=dict(describe(self), log_type="log"), stacklevel=2)


def _log_info(self, message, type="info"):
    if type in self.ignore_log_types:
        level = logging.DEBUG
    else:
        level = _LEVELS.get(type, logging.INFO)
    _logger.log(level, "%s", message, extra=dict(describe(self), log_type=type), stacklevel=2)


def _loop_warning(obj, message):
    _logger.error("%s", message, extra=dict(describe(obj), log_type="error"))


def use_logging(logger=None):
    """Send dispatchers' log()/log_info() and the loop's warnings to ``logger``
    (a ``logging.Logger`` or a logger name; None: the 'fastcore' logger).
    ``use_logging(False)`` restores the standard behaviour. Returns the logger
    in use (None after ``use_logging(False)``)."""
    global _logger
    from fastcore.asyncore import dispatcher

    if logger is False:
        for name, method in _standard.items():
            setattr(dispatcher, name, method)
        _standard.clear()
        _logger = None
        core.set_warning_sink(None)
        return None
    if logger is None or isinstance(logger, str):
        logger = logging.getLogger(logger or "fastcore")
    elif not isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
        raise TypeError(
            "use_logging() takes a logging.Logger, a logger name, None or False, not %r"
            % type(logger).__name__
        )
    if not _standard:
        _standard.update(log=dispatcher.__dict__["log"], log_info=dispatcher.__dict__["log_info"])
    _logger = logger
    dispatcher.log = _log
    dispatcher.log_info = _log_info
    core.set_warning_sink(_loop_warning)
    return logger
