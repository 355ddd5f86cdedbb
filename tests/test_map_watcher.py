"""The registry's view of a map changed behind the core's back.

An unchanged map costs the loop no pass over it: on the extension a change
count kept by a dict watcher (3.12+) or PEP 509's version tag (before 3.14)
tells it nothing changed; the pure core compares the map with its entries.
Every kind of change made to the dict directly is seen at the next
iteration: the dispatcher put in is served, the one taken out is not.
"""

import socket

import pytest

from fastcore import _impl, asyncore

pytestmark = pytest.mark.fastcore_only

IDLE = 50


class Recorder(asyncore.dispatcher):
    """Records what it reads; idle until its peer writes."""

    def __init__(self, sock, map):
        super().__init__(sock, map=map)
        self.received = b""

    def handle_read(self):
        self.received += self.recv(100)

    def writable(self):
        return False


@pytest.fixture
def idle_map():
    """A map of IDLE registered, idle dispatchers, and their peers."""
    sockmap = {}
    peers = []
    for _ in range(IDLE):
        a, b = socket.socketpair()
        Recorder(a, sockmap)
        peers.append(b)
    asyncore.loop(timeout=0, map=sockmap, count=2)
    yield sockmap, peers
    asyncore.close_all(map=sockmap, ignore_all=True)
    for peer in peers:
        peer.close()


def reconciles_of(sockmap, count):
    before = _impl.core._reconcile_count()
    asyncore.loop(timeout=0, map=sockmap, count=count)
    return _impl.core._reconcile_count() - before


def test_unchanged_map_needs_no_pass_over_it(idle_map):
    sockmap, _ = idle_map
    assert reconciles_of(sockmap, 20) == 0


def outsider(sockmap):
    """A dispatcher made on no map, its socket's fd, and its peer."""
    a, b = socket.socketpair()
    obj = Recorder(a, {})
    return obj, a.fileno(), b


CHANGES = {
    "setitem": lambda m, fd, obj: m.__setitem__(fd, obj),
    "update": lambda m, fd, obj: m.update({fd: obj}),
    "setdefault": lambda m, fd, obj: m.setdefault(fd, obj),
    "|=": lambda m, fd, obj: m.__ior__({fd: obj}),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_dispatcher_put_in_directly_is_served(idle_map, change):
    sockmap, _ = idle_map
    obj, fd, peer = outsider(sockmap)
    try:
        CHANGES[change](sockmap, fd, obj)
        peer.send(b"ping")
        asyncore.loop(timeout=1, map=sockmap, count=1)
        assert obj.received == b"ping"
        assert reconciles_of(sockmap, 5) == 0
    finally:
        peer.close()


def test_replacing_the_object_of_an_fd_is_seen(idle_map):
    sockmap, peers = idle_map
    fd = next(iter(sockmap))
    old = sockmap[fd]
    new = Recorder.__new__(Recorder)
    new.received = b""
    asyncore.dispatcher.__init__(new, old.socket, map={})
    sockmap[fd] = new
    index = list(sockmap).index(fd)
    peers[index].send(b"to the new one")
    asyncore.loop(timeout=1, map=sockmap, count=1)
    assert new.received == b"to the new one"
    assert old.received == b""


REMOVALS = {
    "del": lambda m, fd: m.__delitem__(fd),
    "pop": lambda m, fd: m.pop(fd),
    "popitem": lambda m, fd: m.popitem(),
    "clear": lambda m, fd: m.clear(),
}


@pytest.mark.parametrize("removal", sorted(REMOVALS))
def test_dispatcher_taken_out_directly_is_not_served(idle_map, removal):
    sockmap, peers = idle_map
    everyone = list(sockmap.values())
    fd = list(sockmap)[-1]   # popitem's choice
    obj = sockmap[fd]
    REMOVALS[removal](sockmap, fd)
    peers[-1].send(b"unseen")
    asyncore.loop(timeout=0.05, map=sockmap, count=2)
    assert obj.received == b""
    assert fd not in sockmap
    for each in everyone:
        each.close()


def test_empty_map_filled_at_once_is_seen():
    """dict.update() of an empty dict from another dict copies it whole (a
    dict watcher hears of it as one event, not one per key)."""
    sockmap = {}
    asyncore.loop(timeout=0, map=sockmap, count=1)
    obj, fd, peer = outsider(sockmap)
    try:
        sockmap.update({fd: obj})
        peer.send(b"copied")
        asyncore.loop(timeout=1, map=sockmap, count=1)
        assert obj.received == b"copied"
    finally:
        asyncore.close_all(map=sockmap)
        peer.close()


def test_many_maps_each_seen(idle_map):
    """Registries of other maps do not take the changes of this one."""
    sockmap, _ = idle_map
    others = [{} for _ in range(5)]
    for other in others:
        asyncore.loop(timeout=0, map=other, count=1)
    obj, fd, peer = outsider(sockmap)
    try:
        sockmap[fd] = obj
        peer.send(b"x")
        asyncore.loop(timeout=1, map=sockmap, count=1)
        assert obj.received == b"x"
    finally:
        peer.close()
        for other in others:
            asyncore.close_all(map=other)
