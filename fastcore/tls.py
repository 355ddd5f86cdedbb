"""TLS for fastcore's dispatchers and async_chat.

``start_tls(d, context, server_side=..., server_hostname=...)`` turns TLS on
for a connected dispatcher ``d`` (an accepted connection, a client once
connected, or an async_chat in the middle of its protocol: STARTTLS). The
handshake runs in the loop, driven by the socket's readiness; when it
completes the loop calls ``d.handle_handshake_done()`` if ``d`` has one. A
failed handshake raises ``ssl.SSLError`` in the loop, which goes to
``d.handle_error()`` (by default: logged, connection closed) after the alert
was sent to the peer; a peer that simply disconnects gets ``handle_close()``.

Once on, ``recv``/``send`` (and so async_chat's ``push``, dispatcher_with_send's
``send``) carry plaintext: ``recv`` returns only decrypted data, ``b""``
when the peer closed (``handle_close`` called, as for a plain socket);
``send`` returns the plaintext bytes accepted, 0 to mean "try again when
writable" (the socket is full, or TLS needs to read first).
``handle_read`` runs only when plaintext is there to read.

Plaintext queued for sending when ``start_tls`` is called (the "220 ready"
reply to STARTTLS still in async_chat's producer_fifo) is sent in the clear
first; the handshake begins once it is gone. Bytes async_chat read past the
command line (a client that sends its ClientHello without waiting for the
reply) are handed to TLS, not lost.

``stop_tls(d)`` unwraps (FTP's CCC): close_notify is exchanged, then the
connection carries plaintext again; ``d.handle_unwrap_done()`` is called if
``d`` has one, and bytes the peer sent in the clear right after its
close_notify are read in order. Both sides must stop sending application
data before unwrapping, and the side that starts TLS or unwraps must do so
before the peer's first TLS record (or close_notify) is processed: a
close_notify received while TLS is open is a close.

``tls_object(d)`` gives the ``ssl.SSLObject`` (``getpeercert()``, ``version()``,
``cipher()``, ``selected_alpn_protocol()`` ...) or None; ``tls_state(d)`` is one
of ``"plain"``, ``"draining"``, ``"handshaking"``, ``"open"``, ``"unwrapping"``,
``"unwrapped"`` (plaintext read with the close_notify not yet recv()'d).
"""

from fastcore._impl import core as _core

__all__ = ["start_tls", "stop_tls", "tls_object", "tls_state"]


def start_tls(dispatcher, context, *, server_side=False, server_hostname=None, session=None):
    """Turn TLS on for a connected dispatcher; returns its ``ssl.SSLObject``.

    TypeError for anything but a fastcore dispatcher or an ``ssl.SSLContext``;
    ValueError if the dispatcher is not connected or already has TLS.
    """
    return _core.start_tls(dispatcher, context, server_side, server_hostname, session)


def stop_tls(dispatcher):
    """Unwrap TLS (close_notify both ways), then carry plaintext again.

    ValueError unless TLS is established (handshake done, not unwrapping).
    """
    _core.stop_tls(dispatcher)


def tls_object(dispatcher):
    """The dispatcher's ``ssl.SSLObject``, or None when it has no TLS."""
    return _core.tls_object(dispatcher)


def tls_state(dispatcher):
    """``"plain"``, ``"draining"``, ``"handshaking"``, ``"open"``, ``"unwrapping"``
    or ``"unwrapped"``."""
    return _core.tls_state(dispatcher)
