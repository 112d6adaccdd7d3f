"""circc.py — calls a model compiled with `circc MODEL.circ --emit lib -o
model.so` from Python, with ctypes and numpy only:

    import circc
    m = circc.load("model.so")
    out = m(tokens=ids)          # dict: output name -> numpy array (taps included)
    m.inputs, m.outputs, m.patches, m.threads = 4

Patches are keyword arguments too (by name; absent = not patched). Errors
raise circc.Error with the library's message. The C API it wraps is
described in the header circc writes beside the library (NAME.h)."""
import ctypes
import os
import re
import threading
from collections import namedtuple

import numpy as np

__all__ = ["Error", "Model", "Tensor", "load"]

_F32, _I64 = 0, 1
_INPUT, _OUTPUT, _PATCH = 0, 1, 2
_DTYPES = {_F32: np.dtype(np.float32), _I64: np.dtype(np.int64)}


class Error(Exception):
    """A failed load or call; .code is the library's error code (2 bad call, 3
    bad input), or None for a mistake found in Python."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


Tensor = namedtuple("Tensor", "name shape dtype tap")
Tensor.__doc__ = "An input, output or patch: name, shape (tuple), numpy dtype, and whether it is a tap."


class _CTensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("rank", ctypes.c_int),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("numel", ctypes.c_int64)]


class _CInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("circc_version", ctypes.c_char_p), ("command_line", ctypes.c_char_p),
                ("source_hash", ctypes.c_char_p), ("ninputs", ctypes.c_int), ("noutputs", ctypes.c_int),
                ("ntaps", ctypes.c_int), ("npatches", ctypes.c_int), ("arena_bytes", ctypes.c_size_t),
                ("flops", ctypes.c_double)]


def prefix_of(path):
    """The API prefix circc gives a library at path: its file name up to the first '.', as a C identifier
    (each byte other than an ASCII letter, digit or '_' becomes '_'; "m_" before a leading digit)."""
    stem = os.fsencode(os.path.basename(path)).split(b".")[0]
    if not stem:
        return "model"
    return ("m_" if stem[:1].isdigit() else "") + re.sub(rb"[^A-Za-z0-9_]", b"_", stem).decode()


def _strip_ones(shape):
    shape = tuple(shape)
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


class Model:
    """One loaded library and its context (its own arena and thread count).
    Calls are serialized per Model; use one Model per thread to run in parallel."""

    def __init__(self, path, prefix=None, threads=None):
        self.path = path
        prefix = prefix or prefix_of(path)
        try:
            self._lib = ctypes.CDLL(os.path.abspath(path))
        except OSError as e:
            raise Error(f"cannot load '{path}': {e}") from None
        f = self._fn = {}
        try:
            for name, res, args in [("init", ctypes.c_void_p, []), ("free", None, [ctypes.c_void_p]),
                                    ("run", ctypes.c_int, [ctypes.c_void_p] + [ctypes.c_void_p] * 3),
                                    ("error", ctypes.c_char_p, [ctypes.c_void_p]),
                                    ("set_threads", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
                                    ("threads", ctypes.c_int, [ctypes.c_void_p]),
                                    ("info", None, [ctypes.POINTER(_CInfo)]),
                                    ("tensor", ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_CTensor)])]:
                fn = getattr(self._lib, f"{prefix}_{name}")
                fn.restype, fn.argtypes = res, args
                f[name] = fn
        except AttributeError:
            raise Error(f"'{path}' has no {prefix}_init: not built by circc --emit lib under this name "
                        f"(pass prefix= the name it was built with)") from None
        info = _CInfo()
        f["info"](ctypes.byref(info))
        self.info = {k: (v.decode() if isinstance(v, bytes) else v)
                     for k, v in ((k, getattr(info, k)) for k, _ in _CInfo._fields_)}
        self.inputs = self._describe(_INPUT, info.ninputs, 0)
        self.outputs = self._describe(_OUTPUT, info.noutputs, info.ntaps)
        self.patches = self._describe(_PATCH, info.npatches, 0)
        self._ctx = f["init"]()
        if not self._ctx:
            raise Error(f"'{path}': out of memory for a context ({info.arena_bytes} bytes of arena)")
        self._in = (ctypes.c_void_p * max(1, len(self.inputs)))()
        self._out = (ctypes.c_void_p * max(1, len(self.outputs)))()
        self._patch = (ctypes.c_void_p * max(1, len(self.patches)))()
        self._lock = threading.Lock()
        if threads is not None:
            self.threads = threads

    def _describe(self, kind, n, ntaps):
        ts = []
        for i in range(n):
            t = _CTensor()
            self._fn["tensor"](kind, i, ctypes.byref(t))
            ts.append(Tensor(t.name.decode(), tuple(t.shape[k] for k in range(t.rank)), _DTYPES[t.dtype],
                             i >= n - ntaps))
        return ts

    @property
    def threads(self):
        """OpenMP threads of this model's runs (set 0 for OpenMP's default); other threads are unaffected."""
        return self._fn["threads"](self._ctx)

    @threads.setter
    def threads(self, n):
        if self._fn["set_threads"](self._ctx, int(n)):
            raise Error(self._fn["error"](self._ctx).decode(), 2)

    def _array(self, t, value, what):
        """value as t's dtype, C-contiguous, shaped as t (leading 1s may differ)."""
        a = np.asarray(value)
        if not np.can_cast(a.dtype, t.dtype, "same_kind"):
            raise Error(f"{what} '{t.name}': expected {t.dtype} (or what converts to it without changing kind), "
                        f"found {a.dtype}")
        if _strip_ones(a.shape) != _strip_ones(t.shape):
            raise Error(f"{what} '{t.name}': expected shape {list(t.shape)}, found {list(a.shape)}")
        return np.ascontiguousarray(a, dtype=t.dtype).reshape(t.shape)

    def __call__(self, arrays=None, /, *, out=None, **kw):
        """Runs the model on inputs and patches given by name (keywords, or a
        dict for names that are not identifiers); returns {output: array}.
        out: optional {output: array} to write into instead (exact shape and
        dtype, C-contiguous)."""
        given = dict(arrays or {}, **kw)
        ins = {t.name: t for t in self.inputs}
        pats = {t.name: t for t in self.patches}
        for name in given:
            if name not in ins and name not in pats:
                raise Error(f"unknown input or patch '{name}'; inputs: {', '.join(ins) or '(none)'}; "
                            f"patches: {', '.join(pats) or '(none)'}")
        for t in self.inputs:
            if t.name not in given:
                raise Error(f"missing input '{t.name}' {list(t.shape)} {t.dtype}")
        # converted arrays (copies only when the dtype or layout differs) live until the run returns
        inputs = [self._array(t, given[t.name], "input") for t in self.inputs]
        patches = [self._array(t, given[t.name], "patch") if t.name in given else None for t in self.patches]
        result = {}
        for t in self.outputs:
            a = (out or {}).get(t.name)
            if a is None:
                a = np.empty(t.shape, t.dtype)
            elif not (isinstance(a, np.ndarray) and a.dtype == t.dtype and a.shape == t.shape
                      and a.flags.c_contiguous and a.flags.writeable):
                raise Error(f"out '{t.name}': expected a writable C-contiguous {t.dtype} array of shape {list(t.shape)}")
            result[t.name] = a
        with self._lock:
            if not self._ctx:
                raise Error(f"'{self.path}': the model was closed")
            for i, a in enumerate(inputs):
                self._in[i] = a.ctypes.data
            for k, a in enumerate(patches):
                self._patch[k] = None if a is None else a.ctypes.data
            for i, t in enumerate(self.outputs):
                self._out[i] = result[t.name].ctypes.data
            code = self._fn["run"](self._ctx, self._in, self._out, self._patch)
            if code:
                raise Error(self._fn["error"](self._ctx).decode(), code)
        return result

    def close(self):
        """Frees the context (also done when the Model is garbage-collected)."""
        if getattr(self, "_ctx", None):
            self._fn["free"](self._ctx)
            self._ctx = None

    def __del__(self):
        self.close()

    def __repr__(self):
        def fmt(ts):
            return ", ".join(f"{t.name}{list(t.shape)}:{t.dtype}" for t in ts)
        return f"<circc.Model {self.path}: inputs {fmt(self.inputs)}; outputs {fmt(self.outputs)}>"


def load(path, prefix=None, threads=None):
    """Loads a library built by circc --emit lib. prefix: its API prefix if the
    file was renamed (default: from the file name, as circc makes it)."""
    return Model(path, prefix, threads)
