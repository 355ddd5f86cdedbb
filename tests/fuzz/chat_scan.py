"""async_chat's input scanner, driven the same way on two implementations.

``run_scan`` feeds chunks through a socketpair into an async_chat whose
terminator moves along a given sequence at every ``found_terminator``, and
returns everything the subclass saw: the ``collect_incoming_data`` arguments,
the ``found_terminator`` calls, and what is left buffered.  ``decode`` turns
fuzzer bytes into such a case.  Used by tests/test_reliability_properties.py
(hypothesis, bounded, in CI) and tests/fuzz/fuzz_chat_scan.py (atheris).
"""

import select
import socket

ALPHABET = b"ab\r\n\0\xff"


def run_scan(asynchat, chunks, terms, in_size=65536, use_loop=None):
    """The (collect data | ("found", terminator)) sequence, the unread input
    and the final terminator after feeding ``chunks``.

    Each chunk is read completely before the next is sent (one socketpair
    recv per handle_read, ``in_size`` bytes at most).
    """
    events = []

    class Recorder(asynchat.async_chat):
        ac_in_buffer_size = in_size

        def __init__(self, sock):
            asynchat.async_chat.__init__(self, sock, map={})
            self.step = 0
            self.set_terminator(terms[0])

        def collect_incoming_data(self, data):
            events.append(bytes(data))

        def found_terminator(self):
            events.append(("found", self.get_terminator()))
            self.step += 1
            self.set_terminator(terms[self.step % len(terms)])

    a, b = socket.socketpair()
    chat = Recorder(a)
    try:
        for chunk in chunks:
            if chunk:
                b.sendall(chunk)
            while select.select([a], [], [], 0)[0]:
                chat.handle_read()
        return events, chat.ac_in_buffer, chat.get_terminator()
    finally:
        chat.close()
        b.close()


def _term(kind, arg, raw):
    if kind == 0:
        return bytes(ALPHABET[x % len(ALPHABET)] for x in raw[:1 + arg % 6])
    if kind == 1:
        return arg % 24
    if kind == 2:
        return None
    return b""


def decode(data):
    """Fuzzer bytes -> (chunks, terms, in_size).

    Byte 0: ac_in_buffer_size (1..16, or 65536); byte 1: how many
    terminators; then per terminator a kind, an argument and up to 6 bytes;
    the rest is the stream, mapped onto a small alphabet so that
    terminators and near-misses are common, cut at every 0x80 bit.
    """
    if len(data) < 2:
        return [data], [b"\n"], 65536
    in_size = 65536 if data[0] >= 240 else 1 + data[0] % 16
    n_terms = 1 + data[1] % 4
    pos = 2
    terms = []
    for _ in range(n_terms):
        head = data[pos:pos + 2].ljust(2, b"\0")
        raw = data[pos + 2:pos + 8].ljust(6, b"a")
        terms.append(_term(head[0] % 4, head[1], raw))
        pos += 8
    chunks = [bytearray()]
    for x in data[pos:]:
        chunks[-1].append(ALPHABET[x % len(ALPHABET)])
        if x & 0x80:
            chunks.append(bytearray())
    return [bytes(c) for c in chunks if c], terms, in_size
