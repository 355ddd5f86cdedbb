# Proven interest: a polled dispatcher whose readable()/writable() answer is
# proven to stay what it was is not asked again until something it depends on
# may have changed (docs/design.md, "Proven interest"). What cannot be proven
# is asked every iteration, as 3.11 does.
#
# A class is provable when its readable and writable are the core's own
# (constant True) or plain functions whose bytecode only reads attributes of
# self, constants and the builtin len(), compares, negates and returns. A
# dispatcher's answer is kept while every attribute those functions (and the
# loop: accepting) read still holds the object of an exact immutable type it
# held when asked, which the checks of each iteration (prove_still) and the
# dict watcher or the instance dict's version tag make sure of.

import builtins as _builtins_module
import dis as _dis
import types as _types

cdef object _true_len = _builtins_module.len

# Bytecode whitelists are per version: only versions whose compilers were
# checked (tests/test_interest_proof.py) prove anything. 3.9 resolves a
# function's builtins from its caller's frame: never proven there.
cdef bint _proofs_supported = (
    sys.implementation.name == "cpython"
    and (3, 10) <= sys.version_info[:2] <= (3, 15)
    # With -b, comparing bytes with str warns: Python code (filters) may run.
    and not sys.flags.bytes_warning
)

# Code flags that make a call more than evaluating its body: *args, **kwargs,
# generators, coroutines, async generators.
cdef int _CALL_FLAGS = 0x04 | 0x08 | 0x20 | 0x80 | 0x100 | 0x200

# Instructions with no effect on the stack or on what is read.
cdef frozenset _NO_EFFECT = frozenset({"RESUME", "NOP", "CACHE", "EXTENDED_ARG", "NOT_TAKEN"})
# Loads of a local without an effect of their own (3.14's borrowed reference).
cdef frozenset _LOAD_LOCAL = frozenset({"LOAD_FAST", "LOAD_FAST_BORROW"})
# Loads of a constant: LOAD_SMALL_INT's and LOAD_COMMON_CONSTANT's argval is
# the object loaded (3.14+), checked as any constant is.
cdef frozenset _LOAD_CONSTANT = frozenset({
    "LOAD_CONST", "RETURN_CONST", "LOAD_SMALL_INT", "LOAD_COMMON_CONSTANT",
})
# Instructions that only combine what is on the stack (immutable values, ints
# from len, bools) or return; jumps are checked to go forward.
cdef frozenset _PURE = frozenset({
    "COMPARE_OP", "IS_OP", "UNARY_NOT", "TO_BOOL", "RETURN_VALUE", "POP_TOP",
})
cdef frozenset _JUMPS = frozenset({
    "POP_JUMP_IF_TRUE", "POP_JUMP_IF_FALSE", "POP_JUMP_IF_NONE",
    "POP_JUMP_IF_NOT_NONE", "POP_JUMP_FORWARD_IF_TRUE", "POP_JUMP_FORWARD_IF_FALSE",
    "POP_JUMP_FORWARD_IF_NONE", "POP_JUMP_FORWARD_IF_NOT_NONE",
    "JUMP_IF_TRUE_OR_POP", "JUMP_IF_FALSE_OR_POP", "JUMP_FORWARD",
})
cdef frozenset _CALLS = frozenset({"CALL", "CALL_FUNCTION"})

cdef dict _class_proofs = {}      # class -> ClassProof (unsound ones too)
cdef unsigned long _proof_pass = 0   # counts the passes over kept answers
cdef bint _any_proven = False     # a dispatcher's answer was ever kept


cdef inline bint immutable_value(PyObject *value) noexcept:
    """Of a type whose len(), comparisons and truth run no Python code and
    whose value cannot change."""
    cdef object t = <object>Py_TYPE(<object>value)
    return t is bytes or t is str or t is int or t is bool or t is float \
        or value == <PyObject *>None


cdef object attribute_at(list instructions, Py_ssize_t k, bint method_bit):
    """LOAD_FAST self; LOAD_ATTR name (not a method load) at k: the name."""
    if k + 1 >= len(instructions):
        return None
    load, attr = instructions[k], instructions[k + 1]
    if load.opname not in _LOAD_LOCAL or attr.opname != "LOAD_ATTR" \
            or attr.is_jump_target or (method_bit and attr.arg & 1):
        return None
    return attr.argval


cdef tuple attributes_read(object code):
    """The attributes of self the code reads, or None if it may do anything
    else than read them, read constants, call the builtin len() on one of
    them, compare, negate and return."""
    if code.co_flags & _CALL_FLAGS or code.co_argcount != 1 \
            or code.co_kwonlyargcount or code.co_nlocals != 1 \
            or code.co_cellvars or code.co_freevars:
        return None
    if getattr(code, "co_exceptiontable", b""):
        return None
    instructions = []
    for ins in _dis.get_instructions(code):
        if ins.opname in _NO_EFFECT:
            if ins.is_jump_target:
                return None
        else:
            instructions.append(ins)
    cdef list names = []
    cdef set starts = set()     # offsets where a step begins
    cdef set targets = set()
    cdef Py_ssize_t i = 0, n = len(instructions)
    cdef bint method_bit = sys.version_info >= (3, 12)

    while i < n:
        ins = instructions[i]
        starts.add(ins.offset)
        op = ins.opname
        name = attribute_at(instructions, i, method_bit)
        if name is not None:
            names.append(name)
            i += 2
        elif op == "LOAD_GLOBAL" and ins.argval == "len":
            # len(self.name): LOAD_GLOBAL len, [PUSH_NULL], the attribute,
            # [PRECALL 1], CALL 1.
            i += 1
            if i < n and instructions[i].opname == "PUSH_NULL" \
                    and not instructions[i].is_jump_target:
                i += 1
            name = attribute_at(instructions, i, method_bit)
            if name is None:
                return None
            names.append(name)
            i += 2
            if i < n and instructions[i].opname == "PRECALL":
                if instructions[i].arg != 1 or instructions[i].is_jump_target:
                    return None
                i += 1
            if i >= n or instructions[i].opname not in _CALLS \
                    or instructions[i].arg != 1 or instructions[i].is_jump_target:
                return None
            names.append(None)   # marks the use of len
            i += 1
        elif op in _LOAD_CONSTANT:
            if not immutable_value(<PyObject *>ins.argval):
                return None
            i += 1
        elif op == "COPY" and ins.arg == 1:
            i += 1
        elif op in _PURE:
            i += 1
        elif op in _JUMPS:
            if not isinstance(ins.argval, int) or ins.argval <= ins.offset:
                return None
            targets.add(ins.argval)
            i += 1
        else:
            return None
    for ins in instructions:
        if ins.is_jump_target:
            targets.add(ins.offset)
    if not targets <= starts:
        return None
    return tuple(names)


@cython.final
@cython.binding(False)
cdef class ClassProof:
    """What readable()/writable() of one class read, decided under its
    version tag."""
    cdef object cls
    cdef unsigned int version
    cdef bint sound           # False: its dispatchers are asked every iteration
    cdef tuple names          # attributes of self read, accepting included
    cdef list functions       # [(function, code)]: the code must stay the function's
    cdef list len_scopes      # [(globals, builtins)] where len must be builtins.len
    cdef unsigned long checked_pass
    cdef bint held

    cdef bint holds(self) except -1:
        """Still true of the class, checked once per pass."""
        if self.checked_pass != _proof_pass:
            self.checked_pass = _proof_pass
            self.held = self.check()
        return self.held

    cdef bint check(self) except -1:
        if not self.sound:
            return False
        cdef unsigned int version = fc_type_version(self.cls)
        if version == 0 or version != self.version:
            return False
        for function, code in self.functions:
            if function.__code__ is not code:
                return False
        try:
            for scope_globals, scope_builtins in self.len_scopes:
                if "len" in scope_globals or scope_builtins.get("len") is not _true_len:
                    return False
        except Exception:
            return False   # a key's own __eq__ raised: cannot tell
        return True


cdef ClassProof class_proof(object cls):
    cdef ClassProof proof = _class_proofs.get(cls)
    if proof is not None and proof.version == fc_type_version(cls) and proof.version:
        return proof
    proof = ClassProof()
    proof.cls = cls
    # A lookup gives the class a version tag if it has none yet.
    fc_type_lookup(<PyTypeObject *>cls, "readable")
    proof.version = fc_type_version(cls)
    proof.functions = []
    proof.len_scopes = []
    proof.sound = _proofs_supported and proof.version != 0 and prove_class(proof) \
        and fc_type_version(cls) == proof.version
    _class_proofs[cls] = proof
    return proof


cdef bint prove_class(ClassProof proof) except -1:
    cdef PyTypeObject *cls = <PyTypeObject *>proof.cls
    cdef PyObject *found
    cdef list names = []
    found = fc_type_lookup(cls, "__getattribute__")
    if found == NULL or <object>found is not _object_getattribute:
        return False
    for method in ("readable", "writable"):
        found = fc_type_lookup(cls, method)
        if found == NULL:
            return False
        function = <object>found
        if function is _base_readable or function is _base_writable:
            continue   # the core's: True
        if type(function) is not _types.FunctionType or function.__closure__:
            return False
        code = function.__code__
        read = attributes_read(code)
        if read is None:
            return False
        proof.functions.append((function, code))
        if None in read:
            proof.len_scopes.append((function.__globals__, function.__builtins__))
        names.extend(name for name in read if name is not None)
    names.append("accepting")   # read by the loop after writable()
    for name in names:
        if name in ("readable", "writable", "__dict__", "__class__"):
            return False
        found = fc_type_lookup(cls, name)
        # A class value of another type may be a descriptor, which would
        # run code or take precedence over the instance dict.
        if found != NULL and not immutable_value(found):
            return False
    proof.names = tuple(dict.fromkeys(names))
    return True


cdef inline object instance_dict_of(DispatcherBase disp):
    """The instance dict if it is an exact dict, else None."""
    cdef PyObject **where = fc_instance_dict_ptr(disp)
    if where == NULL or where[0] == NULL or not PyDict_CheckExact(<object>where[0]):
        return None
    return <object>where[0]


cdef bint values_immutable(ClassProof proof, object own) except -1:
    """Every attribute the class's methods read is found, without a
    descriptor, holding an immutable value; the methods are not the
    instance's own."""
    cdef PyObject *value
    if PyDict_GetItemWithError(own, "readable") != NULL \
            or PyDict_GetItemWithError(own, "writable") != NULL:
        return False
    for name in proof.names:
        value = PyDict_GetItemWithError(own, name)
        if value == NULL:
            value = fc_type_lookup(<PyTypeObject *>proof.cls, name)
        if value == NULL or not immutable_value(value):
            return False
    return True


cdef inline bint state_allows_proof(DispatcherBase disp) noexcept:
    # TLS, a handled close and a paused listener change interest in C.
    return disp._tls is None and not disp._close_handled and not disp._accept_paused


cdef bint prove_still(Entry entry) except -1:
    """The entry's kept answer still holds (one pass of prepare())."""
    cdef DispatcherBase disp = <DispatcherBase>entry.obj
    cdef ClassProof proof = entry.proof
    if not disp._interest_proven or <object>Py_TYPE(disp) is not proof.cls \
            or not state_allows_proof(disp) or not proof.holds():
        return False
    cdef PyObject **where = fc_instance_dict_ptr(disp)
    if where == NULL or <Py_ssize_t>where[0] != entry.proof_dict:
        return False
    if _dict_watcher < 0:
        # No watcher: the version tag moves with any change to the dict (and
        # a new dict has a new one, even at the old address).
        return fc_dict_version(<object>where[0]) == entry.proof_dict_version
    return True


cdef inline void forget_proof(object obj) noexcept:
    """The dispatcher handled an event: its answer is asked again."""
    if isinstance(obj, DispatcherBase):
        (<DispatcherBase>obj)._interest_proven = False


def _proven(DispatcherBase obj not None):
    """For the tests: True if a registry keeps obj's readable()/writable()
    answer instead of asking it this iteration."""
    return obj._interest_proven and any(
        (<Entry>e).proof is not None for e in obj._entries or ())


def _provable(cls):
    """For the tests: the attributes the class's readable()/writable() are
    proven to read (accepting included), or None."""
    cdef ClassProof proof = class_proof(cls)
    return proof.names if proof.sound else None
