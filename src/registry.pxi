# Registries: one per map, keeping its poller's registrations between
# iterations and the interest last given to the kernel for each fd.
#
# The map stays a plain dict that anyone may change. Changes made through
# add_channel/del_channel are applied at once; others are found by the
# reconcile pass, which runs only when the map's version moved since the
# registry last saw it: a count of its changes kept by a dict watcher on
# 3.12+ (dict_watch.h), PEP 509's version tag before.

cdef enum:
    KIND_POLLED = 0       # readable()/writable() asked in Python every iteration
    KIND_BASE = 1         # dispatcher's own readable()/writable()
    KIND_WITH_SEND = 2    # dispatcher_with_send's
    KIND_CHAT = 3         # async_chat's

cdef enum:
    STYLE_SELECT = 0      # loop(use_poll=False): poll() dispatch
    STYLE_POLL = 1        # loop(use_poll=True): poll2() dispatch

cdef enum:
    MAX_REGISTRIES = 64


cdef dict _registries = {}        # id(map) -> Registry, least recently used first
cdef Registry _last_registry = None
cdef list _dirty = []             # dispatchers whose interest must be recomputed
cdef object _change_hook = None   # fastcore.aio: told when registrations fall behind
cdef bint _change_unannounced = False   # record_dirty() ran since the hook was last called


def set_change_hook(hook):
    """hook() is called when interest, the map or the timers change outside
    the loop's own iterations (fastcore.aio then brings them up to date);
    None for none."""
    global _change_hook
    _change_hook = hook


cdef int notify_change() except -1:
    global _change_unannounced
    if _change_hook is not None:
        _change_unannounced = False
        _change_hook()
    return 0


cdef int announce_recorded() except -1:
    """The change hook, for what the dict watcher recorded since it last ran
    (the loop's iterations bring those registrations up to date anyway)."""
    if _change_unannounced:
        notify_change()
    return 0


cdef unsigned long _iteration = 0
cdef unsigned long _fork_generation = 0


def _after_fork_in_child():
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


@cython.binding(False)
cdef class Entry:
    """One fd of a map, as the registry knows it."""
    cdef Registry reg
    cdef object obj
    cdef int fd
    cdef object key        # fd as an int object, made once: the map's key
    cdef int kind
    cdef int mask          # what the kernel was last told
    cdef bint removed      # no longer in the registry
    cdef bint broken       # closed behind the loop's back: not polled
    # A polled entry's answer kept while proven (interest_proof.pxi):
    cdef ClassProof proof          # its class's proof, None while asked
    cdef Py_ssize_t proof_dict     # address of the instance dict it was proven with
    cdef Py_ssize_t proof_index    # its place in Registry.proven
    cdef uint64_t proof_dict_version  # without a dict watcher: that dict's version

    def __cinit__(self, Registry reg not None, int fd, object obj, int kind):
        self.reg = reg
        self.fd = fd
        self.key = fd
        self.obj = obj
        self.kind = kind


cdef int classify(object obj) except -1:
    if not isinstance(obj, DispatcherBase):
        return KIND_POLLED
    cls = type(obj)
    readable = getattr(cls, "readable", None)
    writable = getattr(cls, "writable", None)
    if readable is not _base_readable and readable is not _chat_readable:
        return KIND_POLLED
    instance_dict = getattr(obj, "__dict__", None)
    if instance_dict and ("readable" in instance_dict or "writable" in instance_dict):
        return KIND_POLLED
    if fc_type_version(cls) == 0:
        # No version tag: a later change to the class would go unseen.
        return KIND_POLLED
    # By the C type as well: refresh() reads the kind's C fields (a core
    # method grafted onto another class is asked as Python would ask it).
    if writable is _base_writable:
        return KIND_BASE
    if writable is _with_send_writable and isinstance(obj, WithSendBase):
        return KIND_WITH_SEND
    if writable is _chat_writable and isinstance(obj, ChatBase):
        return KIND_CHAT
    return KIND_POLLED


cdef inline int interest_mask(bint readable, bint writable, int style) noexcept:
    cdef int mask = 0
    if readable:
        mask = FC_IN | FC_PRI
    if writable:
        mask |= FC_OUT
        if style == STYLE_SELECT:
            # select() puts every fd with interest into the exceptional set.
            mask |= FC_PRI
    return mask


cdef Registry registry_of(object map):
    """The map's registry if it has one (never creates one)."""
    if _last_registry is not None and _last_registry.map is map:
        return _last_registry
    cdef Registry reg = _registries.get(id(map))
    if reg is not None and reg.map is map:
        return reg
    return None


cdef Registry registry_for(object map, str backend):
    global _last_registry
    cdef Registry reg = _last_registry
    if reg is None or reg.map is not map:
        key = id(map)
        reg = _registries.pop(key, None)
        if reg is None or reg.map is not map:
            reg = Registry(map, backend)
        _registries[key] = reg   # most recently used last
        if len(_registries) > MAX_REGISTRIES:
            oldest = next(iter(_registries))
            (<Registry>_registries.pop(oldest)).release()
        _last_registry = reg
    if backend != reg.backend:
        reg.switch_backend(backend)
    return reg


def release_map(map):
    """Forget the map's registry and close its poller (close_all calls this)."""
    global _last_registry
    cdef Registry reg = registry_of(map)
    if reg is None:
        return
    _registries.pop(id(map), None)
    if _last_registry is reg:
        _last_registry = None
    reg.release()
    drop_unregistered_dirty()


cdef unsigned long _reconciles = 0


def _reconcile_count():
    """For the tests: how many times a registry compared its map with its
    entries (an unchanged map needs none)."""
    return _reconciles


def _polled(DispatcherBase obj not None):
    """True if a registry asks obj's readable()/writable() every iteration
    instead of tracking its interest in C (for the tests: a dispatcher of a
    facade class that keeps the core's readable/writable never is)."""
    return any((<Entry>e).kind == KIND_POLLED for e in obj._entries or ())


cdef int drop_unregistered_dirty() except -1:
    """Forget dirty dispatchers no registry holds any more: no iteration may
    come to process them, and the list must not keep them alive."""
    cdef DispatcherBase obj
    cdef list keep = []
    for o in _dirty:
        obj = <DispatcherBase>o
        if obj._entries:
            keep.append(obj)
        else:
            obj._dirty = False
    _dirty[:] = keep
    return 0


cdef int process_dirty() except -1:
    cdef DispatcherBase obj
    cdef Entry entry
    # One at a time: if a refresh raises, the rest stay queued.
    while _dirty:
        obj = <DispatcherBase>_dirty.pop()
        obj._dirty = False
        obj._interest_proven = False
        if obj._new_socket and obj._cache is not None \
                and not obj._cache_bits & (1 << CACHED_SOCKET):
            # The socket it replaced is not kept alive (and open) by the
            # cache: dropped here, as the dict watcher may run no code.
            obj._cache[CACHED_SOCKET] = None
        if obj._entries:
            if obj._new_socket:
                obj._new_socket = False
                for e in obj._entries:
                    (<Entry>e).reg.register_again(<Entry>e)
            try:
                for e in list(obj._entries):
                    entry = <Entry>e
                    if entry.kind != KIND_POLLED or obj._reclassify:
                        entry.reg.refresh(entry)
                obj._reclassify = False
            except BaseException:
                obj.mark_dirty()
                raise
    return 0


cdef int watch_waker(Poller poller) except -1:
    cdef int fd = waker_fd()
    poller.set_mask(fd, 0, FC_IN)
    return fd


@cython.binding(False)
cdef class Registry:
    cdef object map
    cdef str backend
    cdef Poller poller
    cdef dict entries      # fd -> Entry
    cdef dict classes      # class of its dispatchers -> (version tag, readable, writable)
    cdef dict polled       # fd -> Entry looked at every iteration
    cdef list proven       # polled entries whose answer is kept: those with a proof
    cdef dict always       # fd -> Entry the poller refuses: always ready
    cdef list broken       # entries whose close is still to be handled
    cdef uint64_t version  # the map's version (map_version()) when last in step
    cdef int map_slot      # its slot in dict_watch.h's watched maps, or FC_MAP_UNWATCHED
    cdef unsigned long fork_generation
    cdef int style
    cdef bint needs_rebuild
    cdef unsigned long unregistrations   # a wait that saw one may report fds just dropped
    cdef int waker         # call_soon_threadsafe's wake-up fd, watched by the poller

    def __cinit__(self, object map, str backend):
        self.map = map
        self.backend = backend
        self.poller = new_poller(backend)
        self.waker = watch_waker(self.poller)
        self.entries = {}
        self.classes = {}
        self.polled = {}
        self.proven = []
        self.always = {}
        self.broken = []
        self.version = FC_NO_VERSION
        self.fork_generation = _fork_generation
        self.style = STYLE_SELECT
        self.map_slot = fc_map_watch(map)

    def __dealloc__(self):
        fc_map_unwatch(self.map_slot)

    cdef inline uint64_t map_version(self) noexcept:
        """Changes with every change to the map; FC_NO_VERSION: unknown."""
        if self.map_slot != FC_MAP_UNWATCHED:
            return fc_map_version(self.map_slot)
        return fc_dict_version(self.map)

    cdef int release(self) except -1:
        for e in list(self.entries.values()):
            self.remove_entry(<Entry>e)
        self.poller.close()
        return 0

    cdef int switch_backend(self, str backend) except -1:
        self.backend = backend
        self.rebuild()
        return 0

    cdef int rebuild(self) except -1:
        """A new poller with every current registration (another backend, a
        fork, or the kernel reporting an fd the registry no longer has)."""
        cdef Entry entry
        cdef int mask
        self.poller.close()
        self.poller = new_poller(self.backend)
        self.waker = watch_waker(self.poller)
        self.fork_generation = _fork_generation
        self.always.clear()
        self.needs_rebuild = False
        for e in self.entries.values():
            entry = <Entry>e
            mask = entry.mask
            entry.mask = 0
            if entry.kind == KIND_POLLED:
                self.set_interest(entry, mask)
            else:
                self.refresh(entry)
        return 0

    # -- keeping up with the map ------------------------------------------

    cdef int note_added(self, object fd, object obj, uint64_t before) except -1:
        cdef Entry entry
        notify_change()
        if self.version != before or before == FC_NO_VERSION:
            return 0        # the map changed behind our back: reconcile later
        entry = self.entries.get(fd)
        if entry is not None:
            if entry.obj is obj:
                # add_channel again: its close is no longer handled, poll it anew.
                entry.broken = False
                (<DispatcherBase?>obj).mark_dirty()
                self.version = self.map_version()
                return 0
            self.remove_entry(entry)
        self.add_entry(fd, obj)
        self.version = self.map_version()
        return 0

    cdef int note_removed(self, object fd, object obj, uint64_t before) except -1:
        cdef Entry entry = self.entries.get(fd)
        notify_change()
        # Unregister now, while the fd is still open (close() closes it next).
        if entry is not None and entry.obj is obj:
            self.remove_entry(entry)
        if self.version == before and before != FC_NO_VERSION:
            self.version = self.map_version()
        return 0

    cdef int sync(self) except -1:
        cdef uint64_t now = self.map_version()
        if now == self.version and now != FC_NO_VERSION:
            return 0
        self.reconcile()
        self.version = self.map_version()
        return 0

    cdef int reconcile(self) except -1:
        global _reconciles
        cdef Entry entry
        _reconciles += 1
        map = self.map
        entries = self.entries
        items = map.items() if type(map) is dict else list(map.items())
        for fd, obj in items:
            entry = entries.get(fd)
            if entry is None:
                self.add_entry(fd, obj)
            elif entry.obj is not obj:
                self.remove_entry(entry)
                self.add_entry(fd, obj)
        if len(entries) != len(map):
            for fd, e in list(entries.items()):
                if map.get(fd) is not (<Entry>e).obj:
                    self.remove_entry(<Entry>e)
        return 0

    cdef int add_entry(self, object fd, object obj) except -1:
        cdef Entry entry = Entry(self, fd, obj, classify(obj))
        cdef DispatcherBase disp
        self.entries[fd] = entry
        if entry.kind == KIND_POLLED:
            self.polled[fd] = entry
        if isinstance(obj, DispatcherBase):
            disp = <DispatcherBase>obj
            self.watch_class(type(obj))
            if disp._entries is None:
                disp._entries = [entry]
            else:
                disp._entries.append(entry)
            if entry.kind != KIND_POLLED:
                disp.mark_dirty()
        return 0

    cdef int remove_entry(self, Entry entry) except -1:
        cdef int fd = entry.fd
        cdef DispatcherBase disp
        if self.entries.get(fd) is entry:
            del self.entries[fd]
        if self.polled.get(fd) is entry:
            del self.polled[fd]
        if entry.proof is not None:
            self.drop_proven(entry)
        if self.always.pop(fd, None) is None and entry.mask:
            self.unregister(fd, entry.mask)
        entry.mask = 0
        entry.removed = True
        if isinstance(entry.obj, DispatcherBase):
            disp = <DispatcherBase>entry.obj
            if disp._entries:
                try:
                    disp._entries.remove(entry)
                except ValueError:
                    pass
        return 0

    # -- interest ----------------------------------------------------------

    cdef int refresh(self, Entry entry) except -1:
        """Recompute a tracked entry's interest from the dispatcher's state.

        Its kind is checked again first: readable/writable given to the
        instance or its class since it was registered make it polled."""
        # Unchecked casts, on the hot path: refresh() is given entries of a
        # DispatcherBase's own list or of a kind other than KIND_POLLED, which
        # classify() gives only to an instance of the kind's class; Entry.obj
        # never changes, nor does an instance's C layout (__class__ assignment
        # needs the same one).
        cdef DispatcherBase disp = <DispatcherBase>entry.obj
        cdef bint writable, accepting
        if entry.removed:
            return 0
        if disp._reclassify:
            entry.kind = classify(disp)
        if entry.kind == KIND_POLLED:
            self.polled[entry.fd] = entry
            return 0
        # State that can change without an assignment cannot tell us when it
        # does: a producer_fifo that is not ours, an out_buffer that is not
        # bytes (a bytearray grows in place). Such a dispatcher is looked at
        # every iteration (in C) instead.
        if (entry.kind == KIND_CHAT and not (<ChatBase>disp).fifo_tracked()) or (
                entry.kind == KIND_WITH_SEND
                and type(cached_attr(disp, CACHED_OUT_BUFFER)) is not bytes):
            self.polled[entry.fd] = entry
        elif self.polled.get(entry.fd) is entry:
            del self.polled[entry.fd]
        # The attributes read as writable() and the loop read them: what
        # raises there goes to the dispatcher's handle_error().
        try:
            if entry.kind == KIND_BASE:
                writable = True
            elif entry.kind == KIND_WITH_SEND:
                writable = not disp.is_connected() or (<WithSendBase>disp).has_output()
            else:
                writable = not disp.is_connected() or (<ChatBase>disp).has_output()
            accepting = disp.is_accepting()
        except _reraised_exceptions:
            raise
        except BaseException:
            call_handle_error(disp)
            return 0
        if accepting:
            writable = False
        if disp._tls is not None:
            # Ciphertext waiting for the socket writes; the handshake and a
            # write that needs the peer first do not write application data.
            writable = disp._tls.write_interest(writable)
        # After handle_close ran, a dispatcher left in the map is no longer
        # read: a pending EOF would otherwise wake the loop forever.
        # A listener at its connection limit is not read either.
        self.set_interest(entry, interest_mask(
            not disp._close_handled and not disp._accept_paused, writable, self.style))
        return 0

    cdef int ask(self, Entry entry) except -1:
        """readable()/writable() of a polled entry, exactly as 3.11 asks them:
        1 if they answered and the kernel has that answer."""
        obj = entry.obj
        cdef bint readable, writable
        try:
            readable = obj.readable()
            writable = obj.writable()
            if writable and obj.accepting:
                writable = False
        except _reraised_exceptions:
            raise
        except BaseException:
            call_handle_error(obj)
            return 0
        if isinstance(obj, DispatcherBase) and (<DispatcherBase>obj)._tls is not None:
            readable = (<DispatcherBase>obj)._tls.read_interest(readable)
            writable = (<DispatcherBase>obj)._tls.write_interest(writable)
        if isinstance(obj, DispatcherBase) and ((<DispatcherBase>obj)._close_handled
                                                or (<DispatcherBase>obj)._accept_paused):
            readable = False
        if self.map.get(entry.fd) is obj:
            self.set_interest(entry, interest_mask(readable, writable, self.style))
            return 1
        return 0

    cdef int ask_proving(self, Entry entry) except -1:
        """ask(), and keep the answer if it is proven to stay what it is
        (interest_proof.pxi): the entry then moves to self.proven."""
        cdef DispatcherBase disp
        cdef ClassProof proof
        cdef uint64_t version = FC_NO_VERSION
        obj = entry.obj
        if not isinstance(obj, DispatcherBase) or not _proofs_supported:
            return self.ask(entry)
        disp = <DispatcherBase>obj
        cls = type(obj)
        proof = class_proof(cls)
        own = instance_dict_of(disp)
        if own is None or not proof.holds() or not state_allows_proof(disp):
            return self.ask(entry)
        if _dict_watcher < 0:
            version = fc_dict_version(own)
            if version == FC_NO_VERSION:
                return self.ask(entry)
        # Cleared by any change to the instance dict while they run (the
        # watcher, HookedDispatcherBase), or by an event.
        disp._interest_proven = True
        if not self.ask(entry):
            disp._interest_proven = False
            return 0
        # Read after they ran, then compared with before: what they read is
        # what is there now.
        if values_immutable(proof, own) and proof.check() \
                and type(obj) is cls and instance_dict_of(disp) is own \
                and state_allows_proof(disp) and disp._interest_proven \
                and (_dict_watcher >= 0 or fc_dict_version(own) == version) \
                and not entry.removed and not entry.broken:
            global _any_proven
            _any_proven = True
            entry.proof = proof
            entry.proof_dict = <Py_ssize_t><PyObject *>own
            entry.proof_dict_version = version
            del self.polled[entry.fd]
            entry.proof_index = len(self.proven)
            self.proven.append(entry)
        else:
            disp._interest_proven = False
        return 1

    cdef list recheck_proven(self):
        """Kept answers that may no longer hold go back to being asked: those
        entries (None for none)."""
        cdef Entry entry
        cdef list stale = None
        cdef list proven = self.proven
        cdef Py_ssize_t i
        for i in range(len(proven)):
            # Unchecked: only entries are put there.
            entry = <Entry>PyList_GET_ITEM(proven, i)
            if not prove_still(entry):
                if stale is None:
                    stale = []
                stale.append(entry)
        if stale is not None:
            for e in stale:
                self.unprove(<Entry>e)
        return stale

    cdef int drop_proven(self, Entry entry) except -1:
        """Out of self.proven (the last entry takes its place)."""
        cdef Entry last = <Entry>self.proven.pop()
        if last is not entry:
            last.proof_index = entry.proof_index
            self.proven[entry.proof_index] = last
        entry.proof = None
        return 0

    cdef int unprove(self, Entry entry) except -1:
        self.drop_proven(entry)
        (<DispatcherBase>entry.obj)._interest_proven = False
        self.polled[entry.fd] = entry
        return 0

    cdef int register_again(self, Entry entry) except -1:
        """The dispatcher has a new socket, perhaps under the old fd number:
        what the kernel knows of the fd is stale."""
        if entry.mask and self.always.pop(entry.fd, None) is None:
            self.unregister(entry.fd, entry.mask)
        entry.mask = 0
        entry.broken = False
        return 0

    cdef int unregister(self, int fd, int old_mask) except -1:
        self.unregistrations += 1
        if self.poller.set_mask(fd, old_mask, 0) == 1:
            # Closed behind our back: a dup elsewhere may keep its kernel
            # registration, and its events, alive.
            self.needs_rebuild = True
        return 0

    cdef int watch_class(self, object cls) except -1:
        """Remember the class of a dispatcher, to notice when its readable/
        writable are replaced later (see check_classes)."""
        if cls not in self.classes:
            self.classes[cls] = (fc_type_version(cls), cls.readable, cls.writable)
        return 0

    cdef int check_classes(self) except -1:
        """Classes whose version tag moved (any change to the class or a
        base): their dispatchers' interest is recomputed, since connected,
        accepting or out_buffer may be read from the class; if readable/
        writable changed, their kind is looked at again too."""
        cdef list changed = None
        cdef Entry entry
        cdef unsigned int version
        for cls, seen in self.classes.items():
            version = fc_type_version(cls)
            # No tag (0) cannot tell: readable/writable are compared below.
            if version == 0 or version != (<tuple>seen)[0]:
                if changed is None:
                    changed = []
                changed.append(cls)
        if changed is None:
            return 0
        cdef list methods_changed = []
        for cls in changed:
            version, readable, writable = self.classes.pop(cls)
            now_readable, now_writable = cls.readable, cls.writable
            # The tag after the lookups, which give the class one if it has none.
            self.classes[cls] = (fc_type_version(cls), now_readable, now_writable)
            if now_readable is not readable or now_writable is not writable:
                methods_changed.append(cls)
        for e in self.entries.values():
            entry = <Entry>e
            if type(entry.obj) in changed:
                if type(entry.obj) in methods_changed:
                    (<DispatcherBase?>entry.obj)._reclassify = True
                (<DispatcherBase?>entry.obj).mark_dirty()
        return 0

    cdef int set_interest(self, Entry entry, int mask) except -1:
        if entry.removed or entry.broken or mask == entry.mask:
            return 0
        if FASTCORE_DEBUG:
            # Only an entry the registry holds may reach the kernel.
            assert self.entries.get(entry.fd) is entry, (entry.fd, entry.obj)
            assert entry.reg is self
        if entry.fd in self.always:
            if mask == 0:
                del self.always[entry.fd]
            entry.mask = mask
            return 0
        try:
            if mask == 0:
                self.unregister(entry.fd, entry.mask)
            else:
                self.poller.set_mask(entry.fd, entry.mask, mask)
        except OSError as err:
            if err.errno == EPERM:
                # epoll refuses regular files; select() calls them always
                # ready, and so do we.
                self.always[entry.fd] = entry
            elif err.errno == EBADF or err.errno == EINVAL:
                # Closed behind the loop's back but still in the map (EINVAL:
                # the number now belongs to the poller itself).
                entry.broken = True
                entry.mask = 0
                self.broken.append(entry)
                return 0
            else:
                raise
        entry.mask = mask
        return 0

    cdef int prepare(self, int style) except -1:
        global _proof_pass
        cdef Entry entry
        _proof_pass += 1    # class proofs are checked again, once each
        if self.fork_generation != _fork_generation or self.needs_rebuild:
            self.rebuild()
        if style != self.style:
            self.style = style
            # A kept answer's kernel mask depends on the style.
            for e in list(self.proven):
                self.unprove(<Entry>e)
            for e in self.entries.values():
                entry = <Entry>e
                if entry.kind != KIND_POLLED:
                    self.refresh(entry)
        self.sync()
        if self.classes:
            self.check_classes()
        process_dirty()
        if self.proven:
            self.recheck_proven()
        if self.polled:
            for e in list(self.polled.values()):
                entry = <Entry>e
                if entry.removed or entry.broken:
                    continue
                if entry.kind == KIND_POLLED:
                    self.ask_proving(entry)
                else:
                    self.refresh(entry)
            # readable()/writable() may have changed the map or other dispatchers.
            self.sync()
            process_dirty()
            if self.proven:
                # Or what a kept answer read (a class attribute, say): those
                # are asked now, as the entries refreshed just above.
                _proof_pass += 1
                stale = self.recheck_proven()
                if stale is not None:
                    for e in stale:
                        entry = <Entry>e
                        if not entry.removed and not entry.broken:
                            self.ask(entry)
                    self.sync()
                    process_dirty()
        while self.broken:
            entry = <Entry>self.broken.pop()
            if self.map.get(entry.fd) is entry.obj:
                call_close_once(entry.obj)
        return 0
