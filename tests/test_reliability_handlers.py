"""Reliability: handlers that misbehave.

Every handle_* (and async_chat's callbacks) raising an ordinary exception or
ExitNow, and a seeded "chaos" run where handlers raise, close themselves and
others, add dispatchers and take others out of the map and put them back,
with the loop's invariants checked after every iteration.  Both dispatch
styles.  (readable()/writable() raising and handle_error raising on their own
are in test_fixes.py; closing others and map edits from handlers, one case
each, too.)
"""

import random
import socket

import pytest
import support
from support import USE_POLL, PeerReader, pump, run_until

fastcore_only = pytest.mark.fastcore_only


class Boom(Exception):
    pass


def _bystander(kit, m):
    a, b = socket.socketpair()
    return kit.EchoChat(a, map=m), b, PeerReader(b)


def _served(asyncore, m, peer, reader, use_poll, tag):
    line = b"bystander %s\n" % tag
    before = len(reader.buf)
    peer.sendall(line)
    assert pump(asyncore, m, reader, before + len(line), use_poll=use_poll)[before:] == line


def _consistent(m):
    for fd, obj in list(m.items()):
        assert obj._fileno == fd, (fd, obj)
        assert obj.socket is not None and obj.socket.fileno() == fd, (fd, obj)


# ---------------------------------------------------------------------------
# each handler raising
# ---------------------------------------------------------------------------

HANDLERS = ["handle_read", "handle_write", "handle_expt", "handle_connect", "handle_accept",
            "handle_accepted", "handle_close", "collect_incoming_data", "found_terminator"]


def _subject(kit, m, method, exc, keep):
    """A dispatcher whose ``method`` raises ``exc`` while ``raising`` is
    true, and the event that calls it; returns (dispatcher, trigger)."""
    def raiser(self, *args):
        if self.raising:
            self.raising = False
            self._rec("raised", method)
            raise exc("from %s" % method)
        return getattr(super(Subject, self), method)(*args)

    chat = method in ("collect_incoming_data", "found_terminator")
    base = kit.EchoChat if chat else kit.Dispatcher if method == "handle_write" else kit.Reader
    Subject = type("Subject", (base,), {method: raiser, "raising": True})
    if method in ("handle_accept", "handle_accepted"):
        Subject.__init__ = lambda self, map: base.__init__(self, map=map)
        d = Subject(m)
        d.create_socket()
        d.bind(("127.0.0.1", 0))
        d.listen(5)
        return d, lambda: keep.append(socket.create_connection(d.socket.getsockname()))
    if method == "handle_connect":
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(5)
        keep.append(srv)
        d = Subject(map=m)
        d.create_socket()
        return d, lambda: d.connect(srv.getsockname())
    if method == "handle_expt":
        a, b = support.tcp_pair()
        keep.append(a)
        return Subject(b, map=m), lambda: a.send(b"!", socket.MSG_OOB)
    a, b = socket.socketpair()
    keep.append(b)
    d = Subject(a, map=m)
    if method == "handle_close":
        return d, b.close
    return d, lambda: b.sendall(b"data\n")


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("method", HANDLERS)
def test_handler_raising_goes_to_handle_error(asyncore, kit, sockmap, use_poll, method,
                                              capsys):
    chat, peer, reader = _bystander(kit, sockmap)
    keep = []
    d, trigger = _subject(kit, sockmap, method, Boom, keep)
    trigger()
    run_until(asyncore, sockmap, lambda: ("raised", method) in getattr(d, "events", ()),
              use_poll=use_poll, what="%s called" % method)
    _consistent(sockmap)
    assert ("handle_error", "Boom") in d.events
    # the default handle_error closes the dispatcher
    run_until(asyncore, sockmap, lambda: d not in sockmap.values(), use_poll=use_poll)
    assert "Boom" in capsys.readouterr().out
    _served(asyncore, sockmap, peer, reader, use_poll, b"after")
    _consistent(sockmap)
    for s in keep + [peer]:
        s.close()


@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("method", HANDLERS + ["readable", "writable"])
def test_exitnow_from_a_handler_leaves_the_loop_usable(asyncore, kit, sockmap, use_poll, method,
                                                      reference_mode):
    """ExitNow leaves loop(); the next loop() serves everyone, the raiser too."""
    chat, peer, reader = _bystander(kit, sockmap)
    keep = []
    if method in ("readable", "writable"):
        a, b = socket.socketpair()
        keep.append(b)
        state = {"raise": True}

        class Subject(kit.Reader):
            pass

        def predicate(self=None):
            if state["raise"]:
                state["raise"] = False
                raise asyncore.ExitNow("from %s" % method)
            return True

        d = Subject(a, map=sockmap)
        setattr(d, method, predicate)
        def trigger():
            b.sendall(b"data\n")
    else:
        d, trigger = _subject(kit, sockmap, method, asyncore.ExitNow, keep)
    trigger()
    with pytest.raises(asyncore.ExitNow):
        run_until(asyncore, sockmap, lambda: False, use_poll=use_poll, timeout=5)
    _consistent(sockmap)
    assert ("handle_error", "ExitNow") not in getattr(d, "events", ())
    _served(asyncore, sockmap, peer, reader, use_poll, b"after")
    _consistent(sockmap)
    if method == "handle_write":
        n = d.count("handle_write")
        run_until(asyncore, sockmap, lambda: d.count("handle_write") > n, use_poll=use_poll)
    elif method == "found_terminator":
        # 3.11's order: the line was consumed before found_terminator raised;
        # its data waits in incoming and comes out with the next line
        keep[-1].sendall(b"more\n")
        r = PeerReader(keep[-1])
        pump(asyncore, sockmap, r, 9, use_poll=use_poll)
        assert bytes(r.buf) == b"datamore\n"
    elif method == "collect_incoming_data":
        # the line stays in the input buffer, scanned again with the next read
        keep[-1].sendall(b"more\n")
        r = PeerReader(keep[-1])
        pump(asyncore, sockmap, r, 10, use_poll=use_poll)
        assert bytes(r.buf) == b"data\nmore\n"
    elif method in ("handle_read", "readable", "writable"):
        # the data that was not consumed is read again, now handled
        if isinstance(d, kit.EchoChat):
            r = PeerReader(keep[-1])
            pump(asyncore, sockmap, r, 5, use_poll=use_poll)
            assert bytes(r.buf) == b"data\n"
        else:
            run_until(asyncore, sockmap, lambda: bytes(d.data) == b"data\n", use_poll=use_poll)
    elif method == "handle_close":
        # the close was not handled; the next iteration handles it
        run_until(asyncore, sockmap, lambda: d not in sockmap.values(), use_poll=use_poll)
        # (the reference closes twice with use_poll: a b'' read, then HUP)
        assert d.count("handle_close") == 1 or reference_mode
    for s in keep + [peer]:
        s.close()


# ---------------------------------------------------------------------------
# chaos: random misbehaviour in every handler, invariants after each iteration
# ---------------------------------------------------------------------------

ACTIONS = ("raise", "exitnow", "close_self", "close_other", "spawn", "detach_other",
           "reattach")


class World:
    def __init__(self, asyncore, asynchat, seed, rate):
        self.asyncore = asyncore
        self.map = {}
        self.rnd = random.Random(seed)
        self.rate = rate
        self.chaos = True
        self.iteration = 0
        self.members = []      # every Chaos ever made
        self.detached = []
        self.violations = []
        self.done = dict.fromkeys(ACTIONS, 0)
        self.Chaos = _chaos_class(asynchat)

    def live(self):
        return [c for c in self.members if not c.dead]

    def spawn(self):
        a, b = socket.socketpair()
        c = self.Chaos(a, self)
        c.peer, c.reader, c.sent = b, PeerReader(b), bytearray()
        self.members.append(c)
        return c

    def misbehave(self, who, where):
        if not self.chaos or self.rnd.random() >= self.rate:
            return
        action = self.rnd.choice(ACTIONS)
        others = [c for c in self.live() if c is not who and c not in self.detached]
        if action in ("close_other", "detach_other") and not others:
            return
        if action == "reattach" and not self.detached:
            return
        self.done[action] += 1
        if action == "raise":
            raise Boom("%s in %s" % (action, where))
        if action == "exitnow":
            raise self.asyncore.ExitNow(where)
        if action == "close_self":
            who.close()
        elif action == "close_other":
            self.rnd.choice(others).close()
        elif action == "spawn":
            self.spawn()
        elif action == "detach_other":
            victim = self.rnd.choice(others)
            if self.rnd.random() < 0.5:
                victim.del_channel()
            else:
                del self.map[victim._fileno]
            self.detached.append(victim)
        elif action == "reattach":
            self.reattach(self.detached.pop(self.rnd.randrange(len(self.detached))))

    def reattach(self, c):
        if c.dead:
            return
        if c._fileno is None:       # del_channel() forgot it
            c._fileno = c.socket.fileno()
            c.add_channel()
        else:
            self.map[c._fileno] = c

    def check(self):
        _consistent(self.map)
        in_map = set(map(id, self.map.values()))
        for c in self.members:
            if c.dead:
                assert id(c) not in in_map, c
                assert c.socket is None or c.socket.fileno() == -1, c
            elif c not in self.detached:
                assert id(c) in in_map, ("live dispatcher lost from the map", c)
        assert not self.violations, self.violations


def _chaos_class(asynchat):
    class Chaos(asynchat.async_chat):
        def __init__(self, sock, world):
            asynchat.async_chat.__init__(self, sock, map=world.map)
            self.world = world
            self.set_terminator(b"\n")
            self.parts = []
            self.dead = False
            self.closes = 0

        def _enter(self, where):
            if self.dead:
                self.world.violations.append(("%s after close" % where, self))
            self.world.misbehave(self, where)

        def _ask(self, where):
            # Called in the iteration that closed it is what 3.11 does too;
            # called in a later iteration means it is still served.
            if self.dead and self.closed_at < self.world.iteration:
                self.world.violations.append(("%s after close" % where, self))
            self.world.misbehave(self, where)

        def readable(self):
            self._ask("readable")
            return True

        def writable(self):
            self._ask("writable")
            return asynchat.async_chat.writable(self)

        def handle_read(self):
            self._enter("handle_read")
            asynchat.async_chat.handle_read(self)

        def handle_write(self):
            self._enter("handle_write")
            asynchat.async_chat.handle_write(self)

        def collect_incoming_data(self, data):
            # 3.11 goes on splitting what it read after a close in a callback
            self._ask("collect_incoming_data")     # before keeping the data:
            self.parts.append(data)                 # raising re-delivers it

        def found_terminator(self):
            line = b"".join(self.parts)
            self.parts = []
            self.push(line + b"\n")
            self.world.misbehave(self, "found_terminator")

        def handle_close(self):
            self.closes += 1
            if self.closes > 1:
                self.world.violations.append(("handle_close twice", self))
            self.close()

        def handle_error(self):
            self.close()           # quietly: the tracebacks are expected

        def close(self):
            if not self.dead:
                self.dead = True
                self.closed_at = self.world.iteration
            asynchat.async_chat.close(self)

    return Chaos


@fastcore_only   # the reference lets readable() raising escape and serves closed sockets
@pytest.mark.parametrize("use_poll", USE_POLL)
@pytest.mark.parametrize("seed", range(4))
def test_chaos_handlers(asyncore, asynchat, use_poll, seed):
    world = World(asyncore, asynchat, seed, rate=0.03)
    rnd = random.Random(seed + 100)
    m = world.map
    try:
        for _ in range(30):
            world.spawn()
        exits = 0
        for it in range(400):
            for c in world.live():
                if rnd.random() < 0.3:
                    line = b"%d.%d\n" % (id(c) % 1000, it)
                    c.peer.sendall(line)
                    c.sent += line
            world.iteration = it
            try:
                asyncore.loop(timeout=0.01, map=m, count=1, use_poll=use_poll)
            except asyncore.ExitNow:
                exits += 1
            world.check()
            if len(world.live()) < 10:
                for _ in range(10):
                    world.spawn()
        world.chaos = False
        world.iteration += 1
        for c in list(world.detached):
            world.reattach(c)
        world.detached.clear()
        world.check()
        survivors = world.live()
        run_until(asyncore, m, lambda: all(c.reader.has(len(c.sent)) for c in survivors),
                  use_poll=use_poll, timeout=20, what="survivors' echoes")
        for c in survivors:
            assert bytes(c.reader.buf) == bytes(c.sent), c
        dead = [c for c in world.members if c.dead]
        assert all(c.reader.at_eof() for c in dead)
        assert exits == world.done["exitnow"]
        assert all(world.done.values()), world.done     # every kind of misbehaviour ran
        assert survivors and dead
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        for c in world.members:
            c.peer.close()
